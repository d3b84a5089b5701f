package watcher

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/authwatch/authwatch/rules"
)

// memLog is an in-memory container log that serves follow requests over
// io.Pipe with the kubelet's sinceTime rule, for tests inside a synctest
// bubble.
type memLog struct {
	mu       sync.Mutex
	times    []time.Time
	texts    []string
	changed  chan struct{}
	requests []*corev1.PodLogOptions
	// stallAfter, when positive, makes the first request stop writing
	// after that many lines while keeping the stream open.
	stallAfter int
}

func newMemLog() *memLog { return &memLog{changed: make(chan struct{})} }

func (l *memLog) requestCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.requests)
}

func (l *memLog) request(i int) *corev1.PodLogOptions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests[i]
}

func (l *memLog) write(text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.times = append(l.times, time.Now())
	l.texts = append(l.texts, text)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *memLog) OpenLog(ctx context.Context, _, _ string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	l.mu.Lock()
	l.requests = append(l.requests, opts.DeepCopy())
	n := len(l.requests)
	l.mu.Unlock()
	pr, pw := io.Pipe()
	go func() {
		written := 0
		for i := 0; ; {
			l.mu.Lock()
			times, texts, changed := l.times[i:], l.texts[i:], l.changed
			i = len(l.times)
			l.mu.Unlock()
			for j := range times {
				if opts.SinceTime != nil && times[j].Before(opts.SinceTime.Time) {
					continue
				}
				if n == 1 && l.stallAfter > 0 && written == l.stallAfter {
					<-ctx.Done()
					pw.CloseWithError(ctx.Err())
					return
				}
				if _, err := fmt.Fprintf(pw, "%s %s\n", times[j].UTC().Format(time.RFC3339Nano), texts[j]); err != nil {
					return
				}
				written++
			}
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case <-changed:
			}
		}
	}()
	return pr, nil
}

// newTimerWatcher builds a Watcher whose pod store holds one running pod
// and whose streams read from log, without informers or sockets.
func newTimerWatcher(t *testing.T, cfg Config, log *memLog) (*Watcher, *stream, *collector) {
	t.Helper()
	got := newCollector()
	w, err := New(Options{
		Logger: testLogger(t), Registerer: prometheus.NewRegistry(), Client: fake.NewClientset(),
		Handler: got, Config: cfg, Logs: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "api-1", UID: "uid-1"}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "app", ContainerID: "cri://a",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
	}}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	if err := store.Add(pod); err != nil {
		t.Fatal(err)
	}
	w.stores = []cache.Store{store}
	s := &stream{
		key:    streamKey{podUID: "uid-1", container: "app", containerID: "cri://a"},
		source: rules.Source{Namespace: "ns", Pod: "api-1", Container: "app", ContainerID: "cri://a", Workload: "Pod/api-1"},
		res:    newResumeState(),
		lines:  w.m.lines.WithLabelValues("ns", "Pod/api-1"),
	}
	return w, s, got
}

func TestStallTimeoutReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newMemLog()
		log.stallAfter = 8
		// A line a second: 20 mean gaps are 20s, so stall_min (30s) holds.
		for i := range 10 {
			log.write(fmt.Sprintf("line %d", i))
			time.Sleep(time.Second)
		}
		w, s, got := newTimerWatcher(t, DefaultConfig(), log)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); w.follow(ctx, s) }()

		synctest.Wait()
		if n := got.count("cri://a"); n != 8 {
			t.Fatalf("delivered %d lines before the stall, want 8", n)
		}
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if n := log.requestCount(); n != 1 {
			t.Fatalf("%d requests after 29s, want 1", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := log.requestCount(); n != 2 {
			t.Fatalf("%d requests after 31s, want 2", n)
		}
		if log.request(1).SinceTime == nil {
			t.Error("the reopen has no sinceTime")
		}
		assertExactlyOnce(t, got.texts("cri://a"), numbered("line", 10))
		if v := testutilValue(w.m.reconnects.WithLabelValues(reasonStall)); v != 1 {
			t.Errorf("reconnects{stall} = %v, want 1", v)
		}
		cancel()
		<-done
	})
}

func TestMaxStreamAgeReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newMemLog()
		w, s, got := newTimerWatcher(t, DefaultConfig(), log)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); w.follow(ctx, s) }()

		// One line a minute for four hours: never a stall, but the stream
		// must be reopened once before the kubelet's 4h limit.
		var want []string
		for i := range 240 {
			text := fmt.Sprintf("minute %d", i)
			log.write(text)
			want = append(want, text)
			time.Sleep(time.Minute)
		}
		synctest.Wait()
		if n := log.requestCount(); n != 2 {
			t.Errorf("%d requests in 4h, want 2", n)
		}
		if v := testutilValue(w.m.reconnects.WithLabelValues(reasonMaxAge)); v != 1 {
			t.Errorf("reconnects{max_age} = %v, want 1", v)
		}
		if v := testutilValue(w.m.reconnects.WithLabelValues(reasonStall)); v != 0 {
			t.Errorf("reconnects{stall} = %v, want 0 for a steady stream", v)
		}
		assertExactlyOnce(t, got.texts("cri://a"), want)
		cancel()
		<-done
	})
}

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func TestStallTimeoutWaitsForRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newMemLog()
		log.stallAfter = 3
		for i := range 5 {
			log.write(fmt.Sprintf("line %d", i))
		}
		w, s, got := newTimerWatcher(t, DefaultConfig(), log)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); w.follow(ctx, s) }()

		// Three lines show too few gaps to know the rate: stall_max (5m).
		time.Sleep(4*time.Minute + 59*time.Second)
		synctest.Wait()
		if n := log.requestCount(); n != 1 {
			t.Fatalf("%d requests before stall_max, want 1", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := log.requestCount(); n != 2 {
			t.Fatalf("%d requests after stall_max, want 2", n)
		}
		assertExactlyOnce(t, got.texts("cri://a"), numbered("line", 5))
		cancel()
		<-done
	})
}
