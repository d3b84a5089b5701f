package alerting

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testToken      = "xoxb-111-222-testsecrettoken"
	testHookSecret = "hooksecretXYZ123"
)

// syncBuffer is a log sink that tests read while notifiers write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	d    *Dispatcher
	reg  *prometheus.Registry
	logs *syncBuffer
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func slackConfig(t *testing.T, srv *slacktest.Server) *SlackConfig {
	t.Helper()
	return &SlackConfig{
		TokenFile:       writeFile(t, "token", testToken),
		Channel:         "#alerts",
		APIURL:          srv.APIURL(),
		MessageInterval: time.Millisecond,
		UpdateInterval:  time.Millisecond,
		RetryAfter:      50 * time.Millisecond,
	}
}

func newHarness(t *testing.T, cfg Config, edits ...func(*Options)) *harness {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewPedanticRegistry()
	opts := Options{
		Config:     cfg,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
		Backoff:    Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Version:    "test",
	}
	for _, edit := range edits {
		edit(&opts)
	}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{d: d, reg: reg, logs: logs}
}

// start runs the dispatcher until the test ends.
func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func sampleIncident(ns, workload string, count int) incident.Incident {
	return incident.Incident{
		ID:         "id-" + ns + "-" + workload,
		Key:        incident.Key{Policy: "auth-failures", Namespace: ns, Workload: workload},
		State:      incident.StateFiring,
		Category:   "auth_failure",
		Severity:   "error",
		Rules:      map[string]int{"http-401": count},
		Count:      count,
		InWindow:   count,
		Threshold:  5,
		Window:     time.Minute,
		Pods:       []string{"api-7d9-abcde"},
		Containers: []string{"app"},
		First:      incident.Sample{Time: t0, Pod: "api-7d9-abcde", Container: "app", RuleID: "http-401", Text: "GET /orders -> 401 Unauthorized"},
		Latest:     incident.Sample{Time: t0, Pod: "api-7d9-abcde", Container: "app", RuleID: "http-401", Text: "GET /orders -> 401 Unauthorized"},
		StartedAt:  t0,
		FiredAt:    t0,
		LastSeen:   t0,
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
