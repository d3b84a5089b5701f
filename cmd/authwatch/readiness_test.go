package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/authwatch/authwatch/internal/httpserver"
	"github.com/authwatch/authwatch/internal/leader"
	"github.com/authwatch/authwatch/rules"
	"github.com/authwatch/authwatch/watcher"
)

func readinessElector(t *testing.T, client kubernetes.Interface, identity string) *leader.Elector {
	t.Helper()
	el, err := leader.New(leader.Options{
		Client: client, Namespace: "authwatch", Name: "authwatch-leader", Identity: identity,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return el
}

// readyz serves r.check as `authwatch run` does and returns the /readyz
// status and body.
func readyz(t *testing.T, r *readiness) (int, string) {
	t.Helper()
	srv, err := httpserver.New(httpserver.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Gatherer: prometheus.NewRegistry(),
		Addr: "127.0.0.1:0", Ready: r.check,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// startSyncedWatcher runs a watcher on client until the test ends and
// returns it once its informers have synced.
func startSyncedWatcher(t *testing.T, client kubernetes.Interface) *watcher.Watcher {
	t.Helper()
	w, err := watcher.New(watcher.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
		Client: client, Handler: watcher.HandlerFunc(func(*rules.Line) {}),
		Config: watcher.DefaultConfig(), DefaultNamespace: "ns",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitUntil(t, "the pod informers synced", w.Synced)
	return w
}

func TestReadinessStandbyIsReady(t *testing.T) {
	client := fake.NewClientset()
	holder, duration, now := "authwatch-old-pod", int32(3600), metav1.NewMicroTime(time.Now())
	_, err := client.CoordinationV1().Leases("authwatch").Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "authwatch", Name: "authwatch-leader"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: &holder, LeaseDurationSeconds: &duration, AcquireTime: &now, RenewTime: &now,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	el := readinessElector(t, client, "authwatch-new-pod")
	r := &readiness{elector: el, stage: func() error { return nil }}

	// Before the first campaign, and while another replica holds the
	// Lease, this replica is a standby.
	if code, body := readyz(t, r); code != http.StatusOK || !strings.HasPrefix(body, "ok: standby, waiting for the Lease authwatch/authwatch-leader") {
		t.Errorf("/readyz before the campaign = %d %q, want 200 standby", code, body)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- el.Run(ctx, func(context.Context) error {
			t.Error("the standby started leading while another replica held the Lease")
			return nil
		})
	}()
	waitUntil(t, "the Lease read", func() bool { return el.Holder() == holder })
	code, body := readyz(t, r)
	if code != http.StatusOK {
		t.Errorf("/readyz of a standby = %d %q, want 200", code, body)
	}
	if want := "ok: standby, waiting for the Lease authwatch/authwatch-leader held by authwatch-old-pod\n"; body != want {
		t.Errorf("/readyz body of a standby = %q, want %q", body, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("elector Run() = %v", err)
	}
}

func TestReadinessLeaderWaitsForInformers(t *testing.T) {
	client := fake.NewClientset()
	el := readinessElector(t, client, "authwatch-pod")
	var stageErr error
	r := &readiness{elector: el, stage: func() error { return stageErr }}

	ctx, cancel := context.WithCancel(t.Context())
	leading := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- el.Run(ctx, func(ctx context.Context) error {
			close(leading)
			<-ctx.Done()
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("elector Run() = %v", err)
		}
	}()
	select {
	case <-leading:
	case <-time.After(20 * time.Second):
		t.Fatal("the elector did not lead with a free Lease")
	}

	// Leading, with no watcher yet: the checkpoint is being read.
	if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "pod informers have not synced") {
		t.Errorf("/readyz of a leader without a watcher = %d %q, want 503 informers not synced", code, body)
	}

	r.watcher.Store(startSyncedWatcher(t, client))
	if code, body := readyz(t, r); code != http.StatusOK || body != "ok: leading, Lease authwatch/authwatch-leader\n" {
		t.Errorf("/readyz of a synced leader = %d %q, want 200 leading", code, body)
	}

	stageErr = errors.New("slack: invalid_auth")
	if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "slack: invalid_auth") {
		t.Errorf("/readyz of a leader with failing Slack credentials = %d %q, want 503 with the Slack error", code, body)
	}
}

func TestReadinessWithoutLeaderElection(t *testing.T) {
	r := &readiness{stage: func() error { return nil }}
	if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "pod informers have not synced") {
		t.Errorf("/readyz before the watcher = %d %q, want 503 informers not synced", code, body)
	}
	r.watcher.Store(startSyncedWatcher(t, fake.NewClientset()))
	if code, body := readyz(t, r); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz with synced informers = %d %q, want 200 ok", code, body)
	}
}
