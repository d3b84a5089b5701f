// Package httpserver serves authwatch's operational endpoints: /metrics
// for Prometheus, /healthz (the process is serving) and /readyz (the
// daemon is ready to do its work).
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configures a Server. Logger, Gatherer and Addr are required.
type Options struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
	// Addr is the listen address, for example ":9090" or "127.0.0.1:0".
	Addr string
	// Ready returns the body of a 200 /readyz response ("ok" when empty)
	// once the daemon is ready, or an error that gives the reason it is
	// not, served with 503. A nil Ready means always ready.
	Ready func() (string, error)
	// Listening, if set, is called with the bound address once the
	// listener is open (useful with port 0).
	Listening func(addr net.Addr)
}

// Server is the HTTP server for the operational endpoints.
type Server struct {
	opts Options
	mux  *http.ServeMux
}

// New checks opts and builds a Server; Run serves.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil || opts.Gatherer == nil || opts.Addr == "" {
		return nil, errors.New("httpserver: Logger, Gatherer and Addr are required")
	}
	s := &Server{opts: opts, mux: http.NewServeMux()}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError)}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body := ""
		if opts.Ready != nil {
			var err error
			if body, err = opts.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		if body == "" {
			body = "ok"
		}
		_, _ = fmt.Fprintln(w, body)
	})
	return s, nil
}

// Handler returns the router, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Run serves until ctx ends, then shuts down, giving open requests up to
// five seconds.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("httpserver: listen on %s: %w", s.opts.Addr, err)
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.opts.Logger.Info("http server listening", "addr", ln.Addr().String())
	if s.opts.Listening != nil {
		s.opts.Listening(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("httpserver: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	<-errc
	if err != nil {
		return fmt.Errorf("httpserver: shutdown: %w", err)
	}
	return nil
}
