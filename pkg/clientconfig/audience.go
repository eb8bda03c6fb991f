package clientconfig

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// AudienceTokenSeconds is the lifetime the manager asks for its
// audience-bound tokens: the shortest the TokenRequest API grants.
const AudienceTokenSeconds = 600

// AudienceTokens issues tokens of the process's own service account bound
// to one audience (TokenRequest), for the replay sidecars: a token for one
// sidecar opens that sidecar only, and the API server refuses it. A token
// is reused for its audience until 80 % of its lifetime has passed, so a
// migration's calls cost one TokenRequest per pod, made on the first call
// (before the pause) and not on the downtime's path. The service account
// needs `create` on its own serviceaccounts/token (a Role the chart
// grants in the release namespace, with the account's name).
type AudienceTokens struct {
	client kubernetes.Interface
	// now defaults to time.Now.
	now func() time.Time

	// boundTo, when set, is the pod the tokens are bound to: the API
	// server then names the pod's node in them (a node agent's tokens).
	boundTo *authenticationv1.BoundObjectReference

	mu                 sync.Mutex
	namespace, account string // found out on first use
	tokens             map[string]issued
}

type issued struct {
	token      string
	renewAfter time.Time
	expires    time.Time
}

// NewAudienceTokens issues tokens of cfg's identity, which must be a service
// account (it finds out which with a SelfSubjectReview on first use).
func NewAudienceTokens(cfg *rest.Config) (*AudienceTokens, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &AudienceTokens{client: cs}, nil
}

// NewPodAudienceTokens is NewAudienceTokens for a process that runs in the
// pod podName (UID podUID) and binds its tokens to it: each token names the
// pod's node, and the API server stops honouring it once the pod is gone.
func NewPodAudienceTokens(cfg *rest.Config, podName, podUID string) (*AudienceTokens, error) {
	if podName == "" || podUID == "" {
		return nil, fmt.Errorf("the pod's name and UID are needed to bind its tokens to it (downward API metadata.name, metadata.uid)")
	}
	a, err := NewAudienceTokens(cfg)
	if err != nil {
		return nil, err
	}
	a.boundTo = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: podName, UID: types.UID(podUID)}
	return a, nil
}

// AudienceTokensOf issues, with client's rights, tokens of the service
// account namespace/account (what a benchmark standing in for the manager
// uses).
func AudienceTokensOf(client kubernetes.Interface, namespace, account string) *AudienceTokens {
	return &AudienceTokens{client: client, namespace: namespace, account: account}
}

// Token returns a token for audience.
func (a *AudienceTokens) Token(ctx context.Context, audience string) (string, error) {
	now := time.Now()
	if a.now != nil {
		now = a.now()
	}
	a.mu.Lock()
	t, ok := a.tokens[audience]
	ns, account := a.namespace, a.account
	a.mu.Unlock()
	if ok && now.Before(t.renewAfter) {
		return t.token, nil
	}
	if account == "" {
		var err error
		if ns, account, err = a.identity(ctx); err != nil {
			return "", err
		}
		a.mu.Lock()
		a.namespace, a.account = ns, account
		a.mu.Unlock()
	}
	tr, err := a.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, account, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](AudienceTokenSeconds), BoundObjectRef: a.boundTo},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for service account %s/%s, audience %q: %w", ns, account, audience, err)
	}
	lifetime := tr.Status.ExpirationTimestamp.Sub(now)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens == nil {
		a.tokens = map[string]issued{}
	}
	for aud, t := range a.tokens { // migrations end: forget their pods' tokens
		if !now.Before(t.expires) {
			delete(a.tokens, aud)
		}
	}
	a.tokens[audience] = issued{token: tr.Status.Token, renewAfter: now.Add(lifetime * 8 / 10), expires: tr.Status.ExpirationTimestamp.Time}
	return tr.Status.Token, nil
}

// identity is the namespace and name of the service account this process
// runs as.
func (a *AudienceTokens) identity(ctx context.Context) (string, string, error) {
	r, err := a.client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("finding out which service account this process runs as (SelfSubjectReview): %w", err)
	}
	return ServiceAccountOf(r.Status.UserInfo.Username)
}

// ServiceAccountOf splits "system:serviceaccount:<namespace>:<name>".
func ServiceAccountOf(user string) (namespace, name string, err error) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	ns, n, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || n == "" || strings.Contains(n, ":") {
		return "", "", fmt.Errorf("the manager runs as %q, not as a service account: only a service account can issue the tokens the replay sidecars accept", user)
	}
	return ns, n, nil
}
