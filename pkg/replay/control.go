package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"
)

// Authenticator says who presented a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (user string, err error)
}

// TokenReviews creates TokenReviews. A clientset's
// AuthenticationV1().TokenReviews() satisfies it, and so does
// RESTTokenReviews, which the sidecar uses.
type TokenReviews interface {
	Create(ctx context.Context, tr *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// TokenReviewer authenticates Kubernetes service-account tokens with the
// TokenReview API (the sidecar's service account needs
// system:auth-delegator), so only the ms2m manager can steer the sidecar.
type TokenReviewer struct {
	Client TokenReviews
}

// Authenticate implements Authenticator.
func (r TokenReviewer) Authenticate(ctx context.Context, token string) (string, error) {
	tr, err := r.Client.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return "", errors.New("token not authenticated")
	}
	return tr.Status.User.Username, nil
}

// RESTTokenReviews posts TokenReviews to the API server as plain JSON. It
// exists to keep the sidecar small: client-go's typed clients register every
// Kubernetes API group, which made up more than a third of the sidecar's
// resident memory (see docs/sidecar.md).
type RESTTokenReviews struct {
	HTTP *http.Client
	URL  string // .../apis/authentication.k8s.io/v1/tokenreviews
}

// NewRESTTokenReviews uses cfg's server, credentials and TLS settings.
func NewRESTTokenReviews(cfg *rest.Config) (*RESTTokenReviews, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	u, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	return &RESTTokenReviews{HTTP: hc, URL: u.JoinPath("apis", authenticationv1.GroupName, "v1", "tokenreviews").String()}, nil
}

// Create implements TokenReviews.
func (r *RESTTokenReviews) Create(ctx context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	in := *tr
	in.APIVersion, in.Kind = authenticationv1.SchemeGroupVersion.String(), "TokenReview"
	body, err := json.Marshal(&in)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("API server answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	out := &authenticationv1.TokenReview{}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return nil, fmt.Errorf("decoding the TokenReview: %w", err)
	}
	return out, nil
}

// MaxRequestBytes bounds a control request's body.
const MaxRequestBytes = 64 << 10

// DefaultCallTimeout bounds a control call that sets no timeoutSeconds.
const DefaultCallTimeout = 30 * time.Second

// callSlack is the time a control call's connection has, past the call's
// timeout, to write its answer.
const callSlack = 10 * time.Second

// Request is the body of the control calls that take one.
type Request struct {
	// TimeoutSeconds bounds the call (default 30).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// Fence is the handover's fence F, or the bound of a replay, per
	// partition.
	Fence map[string]int64 `json:"fence,omitempty"`
	// From is where a replay starts, per partition.
	From map[string]int64 `json:"from,omitempty"`
}

// Call is a decoded, checked Request.
type Call struct {
	Timeout time.Duration
	// Fence and From are nil when the request has none.
	Fence, From map[int]int64
}

// DecodeRequest reads and checks a control request, naming the field at
// fault. An empty body is a request with defaults.
func DecodeRequest(r io.Reader) (Call, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxRequestBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return Call{}, fmt.Errorf("invalid request body: %w", err)
	}
	if dec.More() {
		return Call{}, errors.New("invalid request body: trailing data")
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > 3600 {
		return Call{}, fmt.Errorf("timeoutSeconds: must be between 0 and 3600, got %d", req.TimeoutSeconds)
	}
	c := Call{Timeout: DefaultCallTimeout}
	if req.TimeoutSeconds > 0 {
		c.Timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	var err error
	if c.Fence, err = partitionOffsets("fence", req.Fence); err != nil {
		return Call{}, err
	}
	if c.From, err = partitionOffsets("from", req.From); err != nil {
		return Call{}, err
	}
	return c, nil
}

// maxPartition bounds the partition numbers accepted from outside.
const maxPartition = 1 << 20

// partitionOffsets converts {"<partition>": offset} (JSON object keys are
// strings), refusing what is not a partition number or a valid offset.
func partitionOffsets(field string, in map[string]int64) (map[int]int64, error) {
	if in == nil {
		return nil, nil
	}
	out := make(map[int]int64, len(in))
	for k, v := range in {
		p, err := strconv.Atoi(k)
		if err != nil || p < 0 || p > maxPartition || strconv.Itoa(p) != k {
			return nil, fmt.Errorf("%s: partition %q is not a partition number", field, k)
		}
		if v < 0 {
			return nil, fmt.Errorf("%s[%s]: offset must not be negative, got %d", field, k, v)
		}
		out[p] = v
	}
	return out, nil
}

// Control is the sidecar's HTTP control API for the migration controller:
//
//	GET  /position            where the engine stands, with the replay lag
//	POST /pause, /resume      stop after the in-flight message / continue
//	POST /fence               stop live consumption, report F
//	POST /handover {"fence"}  replay to exactly F, then go live
//	POST /replay {"from", "fence"?}  a standby sidecar replays from offsets
//	GET  /readyz              unauthenticated: 200 only while live
//
// Every call but /readyz needs a bearer token of one of AllowedUsers.
type Control struct {
	Engine       *Engine
	Auth         Authenticator
	AllowedUsers sets.Set[string]
	Metrics      *Metrics
}

// Handler returns the API's HTTP handler.
func (c *Control) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Engine.Ready() {
			http.Error(w, "not live", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	mux.Handle("GET /position", c.authorized(func(ctx context.Context, _ Call) (Position, error) {
		return c.Engine.PositionWithLag(ctx)
	}))
	mux.Handle("POST /pause", c.authorized(func(ctx context.Context, _ Call) (Position, error) {
		defer c.Metrics.observe(pauseSeconds, time.Now())
		return c.Engine.Pause(ctx)
	}))
	mux.Handle("POST /resume", c.authorized(func(context.Context, Call) (Position, error) {
		return c.Engine.Resume(), nil
	}))
	mux.Handle("POST /fence", c.authorized(func(ctx context.Context, _ Call) (Position, error) {
		defer c.Metrics.observe(fenceSeconds, time.Now())
		return c.Engine.Fence(ctx)
	}))
	mux.Handle("POST /handover", c.authorized(func(ctx context.Context, call Call) (Position, error) {
		if len(call.Fence) == 0 {
			return Position{}, badRequest("fence: required")
		}
		return c.Engine.Handover(ctx, call.Fence)
	}))
	mux.Handle("POST /abort", c.authorized(func(context.Context, Call) (Position, error) {
		return c.Engine.Abort(), nil
	}))
	mux.Handle("POST /replay", c.authorized(func(_ context.Context, call Call) (Position, error) {
		return c.Engine.Replay(call.From, call.Fence)
	}))
	return mux
}

type badRequest string

func (b badRequest) Error() string { return string(b) }

// unavailable is a call that could not be answered for now (Kafka
// unreachable): 503, and the caller asks again.
type unavailable struct{ error }

func (u unavailable) Unwrap() error { return u.error }

func (c *Control) authorized(call func(context.Context, Call) (Position, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			http.Error(w, "bearer token required", http.StatusUnauthorized)
			return
		}
		user, err := c.Auth.Authenticate(r.Context(), token)
		if err != nil {
			http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if !c.AllowedUsers.Has(user) {
			http.Error(w, fmt.Sprintf("%s may not control this sidecar", user), http.StatusForbidden)
			return
		}
		req, err := DecodeRequest(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The call may take up to its timeout, longer than the server's
		// read and write timeouts: its connection's deadlines move past it
		// (a read deadline passing meanwhile would cancel r's context).
		deadline := time.Now().Add(req.Timeout + callSlack)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
		ctx, cancel := context.WithTimeout(r.Context(), req.Timeout)
		defer cancel()
		pos, err := call(ctx, req)
		switch {
		case errors.As(err, new(badRequest)):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case errors.Is(err, context.DeadlineExceeded):
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		case errors.As(err, new(unavailable)):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(pos)
	})
}
