package scheduler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// ServerOptions configure the extender's HTTP(S) endpoint.
type ServerOptions struct {
	// BindAddress is host:port; empty or "0" disables the extender.
	BindAddress string
	// CertFile and KeyFile turn on TLS; both or neither. The files are
	// watched and reloaded when they change (certificate rotation).
	CertFile, KeyFile string
	// MaxRequestBytes caps a request body (DefaultMaxRequestBytes if 0).
	MaxRequestBytes int64
}

// Enabled reports whether the extender should be served.
func (o ServerOptions) Enabled() bool { return o.BindAddress != "" && o.BindAddress != "0" }

// Validate names the flag at fault; prefix is the flags' common prefix.
func (o ServerOptions) Validate(prefix string) error {
	if !o.Enabled() {
		return nil
	}
	if _, _, err := net.SplitHostPort(o.BindAddress); err != nil {
		return fmt.Errorf("--%s-bind-address must be host:port, got %q: %w", prefix, o.BindAddress, err)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return fmt.Errorf("--%s-cert-file and --%s-key-file go together: set both for TLS or neither", prefix, prefix)
	}
	if o.MaxRequestBytes < 0 {
		return fmt.Errorf("--%s-max-request-bytes must not be negative, got %d", prefix, o.MaxRequestBytes)
	}
	return nil
}

// Server is a manager Runnable that serves an Extender once its Cache has
// synced: answering before that would refuse every node as unknown.
type Server struct {
	opts    ServerOptions
	handler http.Handler
	cache   *Cache
	log     logr.Logger
	started atomic.Bool
}

// NewServer serves the extender over cache.
func NewServer(opts ServerOptions, cache *Cache, log logr.Logger) *Server {
	ext := NewExtender(cache, log)
	if opts.MaxRequestBytes > 0 {
		ext.MaxRequestBytes = opts.MaxRequestBytes
	}
	return &Server{opts: opts, handler: ext, cache: cache, log: log}
}

// NeedLeaderElection is false: every replica answers the scheduler.
func (s *Server) NeedLeaderElection() bool { return false }

// Start listens until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	select {
	case <-s.cache.Synced():
	case <-ctx.Done():
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.BindAddress)
	if err != nil {
		return fmt.Errorf("scheduler extender: %w", err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	scheme := "http"
	if s.opts.CertFile != "" {
		cw, err := certwatcher.New(s.opts.CertFile, s.opts.KeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("scheduler extender: loading TLS certificate: %w", err)
		}
		go func() {
			if err := cw.Start(ctx); err != nil {
				s.log.Error(err, "scheduler extender: watching the TLS certificate failed")
			}
		}()
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: cw.GetCertificate, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	s.log.Info("serving the scheduler extender", "url", scheme+"://"+ln.Addr().String())
	s.started.Store(true)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("scheduler extender: %w", err)
	}
	return nil
}

// ReadyCheck is a healthz.Checker: ready once the extender answers.
func (s *Server) ReadyCheck(*http.Request) error {
	if !s.started.Load() {
		return errors.New("scheduler extender not serving yet (waiting for its cache)")
	}
	return nil
}
