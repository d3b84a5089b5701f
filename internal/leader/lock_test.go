package leader

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestLeaseForbiddenReported runs an election against a fake API server
// that rejects one Lease verb with 403 Forbidden, and checks the counter
// and the single Warn record that names the verb and the fix.
func TestLeaseForbiddenReported(t *testing.T) {
	expired := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "authwatch", Name: "authwatch-leader"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       new("gone"),
			LeaseDurationSeconds: new(int32(3)),
			AcquireTime:          &metav1.MicroTime{Time: time.Unix(0, 0)},
			RenewTime:            &metav1.MicroTime{Time: time.Unix(0, 0)},
		},
	}
	for _, tc := range []struct {
		verb  string
		lease *coordinationv1.Lease // present before the election
	}{
		{verb: "get"},
		{verb: "create"},
		{verb: "update", lease: expired},
	} {
		t.Run(tc.verb, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client := fake.NewClientset()
				if tc.lease != nil {
					client = fake.NewClientset(tc.lease.DeepCopy())
				}
				client.PrependReactor(tc.verb, "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"},
						"authwatch-leader", errors.New(`User "system:serviceaccount:authwatch:authwatch" cannot `+tc.verb+` resource "leases"`))
				})
				var logs bytes.Buffer
				reg := prometheus.NewPedanticRegistry()
				e, err := New(Options{
					Client: client, Namespace: "authwatch", Name: "authwatch-leader", Identity: "a",
					LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
					Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registerer: reg,
				})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				err = e.Run(ctx, func(context.Context) error {
					t.Error("lead ran although the Lease cannot be written")
					return nil
				})
				if err != nil {
					t.Fatalf("Run: %v", err)
				}

				got := permissionErrors(t, reg, tc.verb)
				if got < 2 {
					t.Errorf("authwatch_api_permission_errors_total{verb=%q,resource=\"leases\"} = %v, want one per retry (>= 2)", tc.verb, got)
				}
				warns := strings.Count(logs.String(), `"msg":"permission denied by the API server"`)
				if warns != 1 {
					t.Errorf("%d permission Warn records, want 1 (rate-limited); log:\n%s", warns, logs.String())
				}
				for _, want := range []string{`"verb":"` + tc.verb + `"`, `"resource":"leases"`, `"namespace":"authwatch"`, "grant " + tc.verb + " on leases"} {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("log lacks %s:\n%s", want, logs.String())
					}
				}
			})
		})
	}
}

// permissionErrors returns authwatch_api_permission_errors_total for
// verb on leases, failing the test when the series is missing.
func permissionErrors(t *testing.T, reg prometheus.Gatherer, verb string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "authwatch_api_permission_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["verb"] == verb && labels["resource"] == "leases" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no authwatch_api_permission_errors_total{verb=%q,resource=\"leases\"} series", verb)
	return 0
}
