package httpserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "authwatch_test_total", Help: "Test counter."})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	var detail atomic.Value
	detail.Store("")
	addrc := make(chan net.Addr, 1)
	srv, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: reg, Addr: "127.0.0.1:0",
		Ready: func() (string, error) {
			if !ready.Load() {
				return "", errors.New("pod informers have not synced")
			}
			return detail.Load().(string), nil
		},
		Listening: func(a net.Addr) { addrc <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	base := "http://" + (<-addrc).String()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: pod informers have not synced") {
		t.Errorf("/readyz before ready = %d %q, want 503 with the reason", code, body)
	}
	ready.Store(true)
	if code, body := get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz when ready = %d %q, want 200 ok", code, body)
	}
	detail.Store("standby: waiting for the Lease authwatch/authwatch-leader")
	if code, body := get("/readyz"); code != http.StatusOK || body != "standby: waiting for the Lease authwatch/authwatch-leader\n" {
		t.Errorf("/readyz when ready with a detail = %d %q, want 200 with the detail", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "authwatch_test_total 3") {
		t.Errorf("/metrics = %d, lacks the counter:\n%s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewRequiresOptions(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New(empty) = nil error, want the missing options")
	}
}

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: prometheus.NewRegistry(), Addr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "httpserver: listen on "+ln.Addr().String()) {
		t.Errorf("Run() on a used port = %v, want a listen error naming the address", err)
	}
}
