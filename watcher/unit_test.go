package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/authwatch/authwatch/rules"
)

func TestLineReader(t *testing.T) {
	in := "2026-12-04T10:00:00.5Z plain\n" +
		"2026-12-04T10:00:01Z crlf\r\n" +
		"kubelet says no\n" +
		"2026-12-04T10:00:02.123456789+02:00 zone\n" +
		"2026-12-04T10:00:03Z " + strings.Repeat("x", 40) + "\n" +
		"2026-12-04T10:00:04Z \n" +
		"2026-12-04T10:00:05Z tail"
	type got struct {
		Time      string
		Text      string
		Truncated bool
		NoTS      bool
		Partial   bool
	}
	var out []got
	r := newLineReader(strings.NewReader(in), 32)
	for {
		var l rawLine
		err := r.next(&l)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ts := ""
		if !l.time.IsZero() {
			ts = l.time.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, got{ts, string(l.text), l.truncated, l.noTimestamp, l.partial})
	}
	want := []got{
		{"2026-12-04T10:00:00.5Z", "plain", false, false, false},
		{"2026-12-04T10:00:01Z", "crlf", false, false, false},
		{"", "kubelet says no", false, true, false},
		{"2026-12-04T08:00:02.123456789Z", "zone", false, false, false},
		{"2026-12-04T10:00:03Z", strings.Repeat("x", 32), true, false, false},
		{"2026-12-04T10:00:04Z", "", false, false, false},
		{"2026-12-04T10:00:05Z", "tail", false, false, true},
	}
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

func TestLineReaderDiscardsPartialLineOnError(t *testing.T) {
	r := newLineReader(io.MultiReader(strings.NewReader("2026-12-04T10:00:00Z half"), errReader{}), 1024)
	var l rawLine
	if err := r.next(&l); !errors.Is(err, errBroken) {
		t.Fatalf("next() = %v, %q; want errBroken", err, l.text)
	}
}

var errBroken = errors.New("connection reset")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

func TestResumeWindowTrim(t *testing.T) {
	base := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	s := newResumeState()
	for i := range 300 {
		ts := base.Add(time.Duration(i) * 10 * time.Millisecond) // 3 seconds
		s.record(lineID{nanos: ts.UnixNano(), hash: uint64(i)}, ts, 5*time.Second)
	}
	// The latest line is at 10:00:02.99, so the floor is 09:59:57.
	if got, want := s.floor, base.Add(-3*time.Second); !got.Equal(want) {
		t.Errorf("floor = %v, want %v", got, want)
	}
	tests := []struct {
		max       int
		wantFloor time.Time
		wantN     int
	}{
		{max: 1000, wantFloor: base.Add(-3 * time.Second), wantN: 300},
		{max: 150, wantFloor: base.Add(2 * time.Second), wantN: 100},
		// Not even the latest second fits: its newest entries are kept.
		{max: 10, wantFloor: base.Add(2 * time.Second), wantN: 10},
	}
	for _, tc := range tests {
		b, floor := s.encodeWindow(tc.max)
		if !floor.Equal(tc.wantFloor) {
			t.Errorf("max %d: floor = %v, want %v", tc.max, floor, tc.wantFloor)
		}
		m, ok := decodeWindow(b)
		if !ok || len(m) != tc.wantN {
			t.Errorf("max %d: decoded %d entries (ok %v), want %d", tc.max, len(m), ok, tc.wantN)
		}
	}
}

func TestResumeSkipsCounts(t *testing.T) {
	ts := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	s := newResumeState()
	id := lineID{nanos: ts.UnixNano(), hash: hashText([]byte("same"), false)}
	for range 3 {
		s.record(id, ts, time.Second)
	}
	s.startReplay()
	var seen []bool
	for range 5 {
		seen = append(seen, s.seen(id))
	}
	if diff := cmp.Diff([]bool{true, true, true, false, false}, seen); diff != "" {
		t.Errorf("seen (-want +got):\n%s", diff)
	}
	if s.gapSuspected() {
		t.Error("gap suspected although the replay came back")
	}
}

func TestResumeGapSuspected(t *testing.T) {
	ts := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	s := newResumeState()
	s.record(lineID{nanos: ts.UnixNano(), hash: 1}, ts, time.Second)
	s.startReplay()
	if s.seen(lineID{nanos: ts.Add(time.Minute).UnixNano(), hash: 2}) {
		t.Fatal("new line taken for a replay")
	}
	if !s.gapSuspected() {
		t.Error("no gap suspected when the expected replay never came")
	}
	if s.gapSuspected() {
		t.Error("gap suspected twice for one reopen")
	}
}

func TestSlotsFairQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(2, 1)
		ctx := t.Context()
		if err := s.acquire(ctx, "a", nil); err != nil {
			t.Fatal(err)
		}
		// Node a is at its cap; a waiter for b must not queue behind one
		// for a.
		granted := make(chan string, 3)
		queued := 0
		go func() {
			_ = s.acquire(ctx, "a", func() { queued++ })
			granted <- "a2"
		}()
		synctest.Wait()
		go func() {
			_ = s.acquire(ctx, "b", func() { queued++ })
			granted <- "b"
		}()
		synctest.Wait()
		if got := <-granted; got != "b" {
			t.Fatalf("first grant = %s, want b", got)
		}
		if !s.contended("a") {
			t.Error("contended(a) = false with a waiter for a")
		}
		s.release("a")
		synctest.Wait()
		if got := <-granted; got != "a2" {
			t.Fatalf("second grant = %s, want a2", got)
		}
		// b was granted as it queued, so only a2 waited.
		if queued != 1 || s.waiting() != 0 {
			t.Errorf("queued callbacks %d, waiting %d; want 1 and 0", queued, s.waiting())
		}
	})
}

func TestSlotsCancelWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(1, 0)
		if err := s.acquire(t.Context(), "a", nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		if err := s.acquire(ctx, "b", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("acquire() = %v, want DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited != time.Minute {
			t.Errorf("waited %s, want 1m", waited)
		}
		if s.waiting() != 0 {
			t.Errorf("waiting = %d after cancel, want 0", s.waiting())
		}
	})
}

func TestNextBackoff(t *testing.T) {
	lo, hi := 500*time.Millisecond, 30*time.Second
	d := time.Duration(0)
	for range 20 {
		next := nextBackoff(d, lo, hi)
		if next < lo/2 || next > hi {
			t.Fatalf("backoff %s outside [%s, %s]", next, lo/2, hi)
		}
		d = next
	}
	if d < hi/2 {
		t.Errorf("backoff after 20 failures = %s, want at least %s", d, hi/2)
	}
}

func TestWorkloadOf(t *testing.T) {
	ctrl := true
	pod := func(kind, name string, labels map[string]string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-1", Labels: labels}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &ctrl}}
		}
		return p
	}
	tests := []struct {
		pod  *corev1.Pod
		want string
	}{
		{pod("ReplicaSet", "api-7d9f8b6c5", map[string]string{"pod-template-hash": "7d9f8b6c5"}), "Deployment/api"},
		{pod("ReplicaSet", "bare-rs", nil), "ReplicaSet/bare-rs"},
		{pod("StatefulSet", "db", nil), "StatefulSet/db"},
		{pod("Job", "backup-29123456", nil), "CronJob/backup"},
		{pod("Job", "migrate", nil), "Job/migrate"},
		{pod("", "", nil), "Pod/p-1"},
	}
	for _, tc := range tests {
		if got := workloadOf(tc.pod); got != tc.want {
			t.Errorf("workloadOf(%v) = %q, want %q", tc.pod.OwnerReferences, got, tc.want)
		}
	}
}

func TestResolve(t *testing.T) {
	st := corev1.ContainerStatus{
		Name: "app", ContainerID: "cri://b",
		State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ContainerID: "cri://a"}},
	}
	pod := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{st}}}
	tests := []struct {
		name, id string
		want     openMode
	}{
		{"app", "cri://b", modeFollow},
		{"app", "cri://a", modePrevious},
		{"app", "cri://old", modeGone},
		{"other", "cri://b", modeGone},
	}
	for _, tc := range tests {
		if got := resolve(pod, tc.name, tc.id); got != tc.want {
			t.Errorf("resolve(%s, %s) = %d, want %d", tc.name, tc.id, got, tc.want)
		}
	}
	pod.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ContainerID: "cri://b"}}
	if got := resolve(pod, "app", "cri://b"); got != modeFinal {
		t.Errorf("resolve(terminated) = %d, want modeFinal", got)
	}
	if got := resolve(nil, "app", "cri://b"); got != modeGone {
		t.Errorf("resolve(nil pod) = %d, want modeGone", got)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate("watch"); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	c.AllNamespaces = true
	c.Namespaces = []string{"a"}
	c.Selector = "app in ("
	c.Containers = []string{"("}
	c.StallMax = Duration(time.Second)
	c.MaxStreams = -1
	c.MaxLineBytes = 10
	err := c.Validate("watch")
	if err == nil {
		t.Fatal("Validate() = nil for an invalid config")
	}
	for _, want := range []string{
		`watch.all_namespaces: cannot be combined with namespaces ["a"]`,
		`watch.selector: invalid label selector "app in ("`,
		`watch.containers[0]: invalid pattern "("`,
		"watch.stall_max: 1s is below stall_min 30s",
		"watch.max_streams: negative cap -1",
		"watch.max_line_bytes: 10 is below the minimum of 1024",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() error lacks %q:\n%v", want, err)
		}
	}
}

func TestCheckpointSizeBounded(t *testing.T) {
	w, err := New(Options{
		Logger: testLogger(t), Registerer: prometheus.NewRegistry(), Client: fake.NewClientset(),
		Handler: HandlerFunc(func(*rules.Line) {}), Config: DefaultConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// 500 busy streams, each with 300 lines in its latest second.
	last := time.Date(2026, 12, 4, 10, 0, 0, 900_000_000, time.UTC)
	for i := range 500 {
		s := &stream{
			key:    streamKey{podUID: types.UID(fmt.Sprintf("uid-%d", i)), container: "app", containerID: fmt.Sprintf("containerd://%064d", i)},
			source: rules.Source{Namespace: "ns", Pod: fmt.Sprintf("api-%d", i)},
			res:    newResumeState(),
		}
		for j := range 300 {
			ts := last.Add(-time.Duration(j) * 3 * time.Millisecond)
			s.res.record(lineID{nanos: ts.UnixNano(), hash: uint64(i*1000 + j)}, ts, 5*time.Second)
		}
		w.streams[s.key] = s
	}
	b, err := w.MarshalCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 450_000 {
		t.Errorf("checkpoint of 500 busy streams is %d bytes, want at most 450000", len(b))
	}
	// The snapshot restores into a new watcher.
	w2, err := New(Options{
		Logger: testLogger(t), Registerer: prometheus.NewRegistry(), Client: fake.NewClientset(),
		Handler: HandlerFunc(func(*rules.Line) {}), Config: DefaultConfig(), Checkpoint: b,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w2.restored); n != 500 {
		t.Errorf("restored %d streams, want 500", n)
	}
}
