package watcher

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/authwatch/authwatch/internal/kubetest"
	"github.com/authwatch/authwatch/rules"
)

// collector records every delivered line by container ID.
type collector struct {
	mu    sync.Mutex
	lines map[string][]rules.Line // guarded by mu
}

func newCollector() *collector { return &collector{lines: map[string][]rules.Line{}} }

func (c *collector) HandleLine(l *rules.Line) {
	cp := *l
	cp.Text = slices.Clone(l.Text)
	c.mu.Lock()
	c.lines[l.Source.ContainerID] = append(c.lines[l.Source.ContainerID], cp)
	c.mu.Unlock()
}

func (c *collector) texts(id string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines[id] {
		out = append(out, string(l.Text))
	}
	return out
}

func (c *collector) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines[id])
}

func (c *collector) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ls := range c.lines {
		n += len(ls)
	}
	return n
}

// testEnv is a stand-in API server with a watcher against it.
type testEnv struct {
	t      *testing.T
	srv    *kubetest.Server
	client kubernetes.Interface
	reg    *prometheus.Registry
	got    *collector
	w      *Watcher
	cancel context.CancelFunc
	done   chan error
	// logger, if set before start, receives the watcher's log.
	logger *slog.Logger
}

// syncBuffer is a bytes.Buffer that a logger and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Namespaces = []string{"ns"}
	cfg.Selector = "app=api"
	cfg.BackoffMin = Duration(20 * time.Millisecond)
	cfg.BackoffMax = Duration(200 * time.Millisecond)
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("WATCHER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	srv, err := kubetest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	client, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, srv: srv, client: client}
}

// start runs a watcher with cfg and an optional checkpoint.
func (e *testEnv) start(cfg Config, checkpoint []byte) {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	e.got = newCollector()
	logger := e.logger
	if logger == nil {
		logger = testLogger(e.t)
	}
	w, err := New(Options{
		Logger: logger, Registerer: e.reg, Client: e.client, Handler: e.got,
		Config: cfg, Checkpoint: checkpoint,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.w = w
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- w.Run(ctx) }()
	e.t.Cleanup(e.stop)
	e.waitFor("informers synced", 10*time.Second, w.Synced)
}

// stop ends the watcher and waits for it.
func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run() = %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Error("watcher did not stop within 10s")
	}
}

func (e *testEnv) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric returns the value of a series, or -1 when it does not exist.
func (e *testEnv) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// lintMetrics runs promlint over the registry.
func (e *testEnv) lintMetrics() {
	e.t.Helper()
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range problems {
		e.t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// numbered returns "prefix 0" ... "prefix n-1".
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i)
	}
	return out
}

// assertExactlyOnce fails unless got holds every line of want exactly
// once, in the same order.
func assertExactlyOnce(t *testing.T, got, want []string) {
	t.Helper()
	counts := map[string]int{}
	for _, g := range got {
		counts[g]++
	}
	for _, w := range want {
		switch counts[w] {
		case 0:
			t.Errorf("line %q lost", short(w))
		case 1:
		default:
			t.Errorf("line %q delivered %d times", short(w), counts[w])
		}
		delete(counts, w)
	}
	for g := range counts {
		t.Errorf("unexpected line %q", short(g))
	}
	if len(got) == len(want) && !slices.Equal(got, want) {
		t.Errorf("lines out of file order")
	}
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return strings.ToValidUTF8(s, "?")
}

// runningPod adds a running pod with one container "app" as instance id.
func (e *testEnv) runningPod(name, id string) *corev1.Pod {
	pod := kubetest.NewPod("ns", name, "1", map[string]string{"app": "api"}, "app")
	kubetest.SetRunning(pod, "app", id, time.Now().Add(-time.Minute), false)
	e.srv.AddPod(pod)
	return pod
}

// writeLines appends texts to log l, one millisecond apart from base.
func writeLines(l *kubetest.Log, base time.Time, texts []string) {
	for i, s := range texts {
		l.Write(base.Add(time.Duration(i)*time.Millisecond), s)
	}
}
