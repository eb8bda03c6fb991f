package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Registries decides where checkpoint images may go (the agent pushes
// there) and be deleted (the manager deletes there), and how they are
// reached. Checkpoint images hold a process's whole memory, its secrets
// included: they go only where the operator said.
type Registries struct {
	// Allowed hosts (host[:port]).
	Allowed []string
	// PlainHTTP hosts are reached without TLS; any other never is.
	PlainHTTP []string
}

// NewRegistries allows the hosts in allowed or, when it is empty, the
// registry of the default repository only.
// Hosts is a comma-separated list of registry hosts (host[:port]) as a
// flag value: --allowed-registries, --plain-http-registries.
type Hosts []string

func (h *Hosts) String() string { return strings.Join(*h, ",") }

func (h *Hosts) Set(v string) error {
	*h = SplitList(v)
	return nil
}

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

func NewRegistries(defaultRepository string, allowed, plainHTTP []string) Registries {
	r := Registries{Allowed: allowed, PlainHTTP: plainHTTP}
	if len(r.Allowed) == 0 && defaultRepository != "" {
		if repo, err := ParseRepository(defaultRepository); err == nil {
			r.Allowed = []string{repo.RegistryStr()}
		}
	}
	return r
}

// Reference parses the image reference and refuses a registry that is not
// allowed.
func (r Registries) Reference(ref string) (name.Reference, error) {
	opts := []name.Option{name.WeakValidation}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, err
	}
	host := parsed.Context().RegistryStr()
	if !slices.Contains(r.Allowed, host) {
		return nil, fmt.Errorf("registry %s is not allowed: checkpoint images go only to %s (--allowed-registries)",
			host, strings.Join(r.Allowed, ", "))
	}
	if slices.Contains(r.PlainHTTP, host) {
		return name.ParseReference(ref, append(opts, name.Insecure)...)
	}
	return parsed, nil
}

// Transport refuses plain HTTP to every registry not named in PlainHTTP:
// go-containerregistry falls back to it for localhost and private
// addresses when TLS fails.
func (r Registries) Transport(base http.RoundTripper) remote.Option {
	return remote.WithTransport(tlsOnly{base: base, plainHTTP: r.PlainHTTP})
}

type tlsOnly struct {
	base      http.RoundTripper
	plainHTTP []string
}

func (t tlsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !slices.Contains(t.plainHTTP, req.URL.Host) {
		return nil, fmt.Errorf("plain HTTP to registry %s refused (--plain-http-registries)", req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

// Delete removes a checkpoint image from its registry: the manifest its
// digest names. A registry that follows the distribution spec's reference
// implementation removes the tags pointing at it too. An image already
// gone is not an error.
func Delete(ctx context.Context, ref name.Digest, opts ...remote.Option) error {
	err := remote.Delete(ref, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting checkpoint image %s: %w", ref, err)
	}
	return nil
}
