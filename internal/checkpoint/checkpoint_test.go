package checkpoint

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func newStore(t *testing.T, client *fake.Clientset) (*Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Client: client,
		Namespace: "authwatch", Name: "authwatch-checkpoint",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func writes(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" || a.GetVerb() == "update" {
			n++
		}
	}
	return n
}

func TestStoreRoundTrip(t *testing.T) {
	client := fake.NewClientset()
	s, reg := newStore(t, client)
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	state := "v1"
	s.Register("watch", func() ([]byte, error) { return []byte(state), nil })
	s.Register("incidents", func() ([]byte, error) { return []byte("open"), nil })
	for _, step := range []struct {
		state      string
		wantWrites int
	}{{"v1", 1}, {"v1", 1}, {"v2", 2}} {
		state = step.state
		if err := s.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := writes(client); got != step.wantWrites {
			t.Errorf("after flushing %q: %d writes, want %d (unchanged state is not written)", step.state, got, step.wantWrites)
		}
	}
	if got := testutil.ToFloat64(s.writes.WithLabelValues("success")); got != 2 {
		t.Errorf("writes{success} = %v, want 2", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}

	// A new store, as after a restart, reads both sections back.
	s2, _ := newStore(t, client)
	if err := s2.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := string(s2.Section("watch")); got != "v2" {
		t.Errorf("Section(watch) = %q, want v2", got)
	}
	if got := string(s2.Section("incidents")); got != "open" {
		t.Errorf("Section(incidents) = %q, want open", got)
	}
	if got := s2.Section("missing"); got != nil {
		t.Errorf("Section(missing) = %q, want nil", got)
	}
}

func TestStoreKeepsUnregisteredSections(t *testing.T) {
	client := fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "authwatch", Name: "authwatch-checkpoint"},
		BinaryData: map[string][]byte{"alerting": []byte("threads")},
	})
	s, _ := newStore(t, client)
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.Register("watch", func() ([]byte, error) { return []byte("w"), nil })
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	cm, err := client.CoreV1().ConfigMaps("authwatch").Get(t.Context(), "authwatch-checkpoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cm.BinaryData["alerting"]); got != "threads" {
		t.Errorf("alerting section = %q after a flush without its owner, want it kept", got)
	}
	if got := string(cm.BinaryData["watch"]); got != "w" {
		t.Errorf("watch section = %q, want w", got)
	}
}

func TestStoreTooLarge(t *testing.T) {
	client := fake.NewClientset()
	s, _ := newStore(t, client)
	s.Register("watch", func() ([]byte, error) { return make([]byte, MaxBytes+1), nil })
	err := s.Flush(t.Context())
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Flush() = %v, want ErrTooLarge", err)
	}
	if writes(client) != 0 {
		t.Error("an oversized checkpoint was written")
	}
	if got := testutil.ToFloat64(s.writes.WithLabelValues("too_large")); got != 1 {
		t.Errorf("writes{too_large} = %v, want 1", got)
	}
}

func TestStoreWriteError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd unavailable")
	})
	s, _ := newStore(t, client)
	s.Register("watch", func() ([]byte, error) { return []byte("w"), nil })
	err := s.Flush(t.Context())
	if err == nil || !strings.Contains(err.Error(), "create configmap authwatch/authwatch-checkpoint: etcd unavailable") {
		t.Fatalf("Flush() = %v, want the create error naming the ConfigMap", err)
	}
	if got := testutil.ToFloat64(s.writes.WithLabelValues("error")); got != 1 {
		t.Errorf("writes{error} = %v, want 1", got)
	}
}

func TestNewRequiresOptions(t *testing.T) {
	_, err := New(Options{})
	if err == nil || !strings.Contains(err.Error(), "[Client Logger Name Namespace Registerer]") {
		t.Errorf("New(empty) = %v, want the missing options listed", err)
	}
}

func TestStoreCutWrapsSnapshots(t *testing.T) {
	client := fake.NewClientset()
	s, _ := newStore(t, client)
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	inside := false
	var log []string
	snap := func(name string) SnapshotFunc {
		return func() ([]byte, error) {
			if !inside {
				t.Errorf("section %s snapshotted outside the cut", name)
			}
			log = append(log, name)
			return []byte(name), nil
		}
	}
	s.Register("watch", snap("watch"))
	s.Register("incidents", snap("incidents"))
	cuts := 0
	s.SetCut(func(take func()) {
		cuts++
		inside = true
		take()
		inside = false
	})
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cuts != 1 || len(log) != 2 {
		t.Errorf("one flush: %d cuts and snapshots %v, want 1 cut around both sections", cuts, log)
	}
	if writes(client) != 1 {
		t.Errorf("%d writes, want 1", writes(client))
	}
}
