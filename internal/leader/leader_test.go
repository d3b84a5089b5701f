package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func newElector(t *testing.T, client kubernetes.Interface, identity string) *Elector {
	t.Helper()
	e, err := New(Options{
		Client: client, Namespace: "authwatch", Name: "authwatch-leader", Identity: identity,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestOneLeaderAndTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		a, b := newElector(t, client, "a"), newElector(t, client, "b")
		var leadingA, leadingB, overlap atomic.Int32
		leadFn := func(self, other *atomic.Int32) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				self.Add(1)
				if other.Load() > 0 {
					overlap.Add(1)
				}
				<-ctx.Done()
				self.Add(-1)
				return nil
			}
		}
		ctxA, cancelA := context.WithCancel(t.Context())
		ctxB, cancelB := context.WithCancel(t.Context())
		doneA, doneB := make(chan error, 1), make(chan error, 1)
		go func() { doneA <- a.Run(ctxA, leadFn(&leadingA, &leadingB)) }()
		time.Sleep(time.Second)
		go func() { doneB <- b.Run(ctxB, leadFn(&leadingB, &leadingA)) }()

		for range 20 {
			time.Sleep(500 * time.Millisecond)
			if !a.IsLeader() || b.IsLeader() {
				t.Fatalf("IsLeader a=%v b=%v, want only a", a.IsLeader(), b.IsLeader())
			}
		}
		if leadingA.Load() != 1 || leadingB.Load() != 0 {
			t.Fatalf("leading a=%d b=%d, want 1 and 0", leadingA.Load(), leadingB.Load())
		}

		cancelA()
		if err := <-doneA; err != nil {
			t.Fatal(err)
		}
		if a.IsLeader() {
			t.Error("a still reports leading after Run returned")
		}
		for i := 0; !b.IsLeader(); i++ {
			if i > 20 {
				t.Fatal("b did not take over after a released the Lease")
			}
			time.Sleep(500 * time.Millisecond)
		}
		if overlap.Load() != 0 {
			t.Error("both replicas led at once")
		}
		cancelB()
		if err := <-doneB; err != nil {
			t.Fatal(err)
		}
	})
}

func TestLeadershipLostCancelsLead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		var partitioned atomic.Bool
		client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			if partitioned.Load() {
				return true, nil, errors.New("connection refused")
			}
			return false, nil, nil
		})
		e := newElector(t, client, "a")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		leads := make(chan context.Context, 4)
		done := make(chan error, 1)
		go func() {
			done <- e.Run(ctx, func(ctx context.Context) error {
				leads <- ctx
				<-ctx.Done()
				return nil
			})
		}()
		first := <-leads

		// The API server stops accepting the renewals, as in a network
		// partition: the fake's tracker does not check resourceVersions, so
		// a competing writer cannot be simulated faithfully.
		partitioned.Store(true)
		time.Sleep(5 * time.Second)
		if first.Err() == nil {
			t.Fatal("lead context not cancelled after the Lease was taken over")
		}
		if e.IsLeader() {
			t.Error("IsLeader true after the renewals failed")
		}

		// Once the partition heals, the replica campaigns and leads again.
		partitioned.Store(false)
		second := <-leads
		if second.Err() != nil || !e.IsLeader() {
			t.Error("not leading again after the partition healed")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var lease *coordinationv1.Lease
		lease, _ = client.CoordinationV1().Leases("authwatch").Get(context.Background(), "authwatch-leader", metav1.GetOptions{})
		if lease != nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "a" {
			t.Error("a holds the Lease after Run returned")
		}
	})
}

func TestLeadErrorEndsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newElector(t, fake.NewClientset(), "a")
		boom := errors.New("boom")
		err := e.Run(t.Context(), func(context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("Run = %v, want boom", err)
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Options{LeaseDuration: time.Second, RenewDeadline: 2 * time.Second})
	if err == nil {
		t.Fatal("New accepted empty options")
	}
	for _, want := range []string{"Options.Client is nil", "Options.Logger is nil", "Options.Identity is empty", "RenewDeadline 2s must be shorter than LeaseDuration 1s"} {
		if !contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
