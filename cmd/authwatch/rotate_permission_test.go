package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/authwatch/authwatch/remediation"
)

// TestWorkloadSelectorForbidden checks that authwatch rotate names the
// verb, the resource and the fix when it may not read a restarted
// workload, and counts the 403.
func TestWorkloadSelectorForbidden(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "statefulsets"}, "db",
			errors.New(`User "system:serviceaccount:authwatch:authwatch" cannot get resource "statefulsets"`))
	})
	var logs bytes.Buffer
	reg := prometheus.NewPedanticRegistry()
	cfg := remediation.Config{Targets: []remediation.Target{{Restart: []remediation.WorkloadRef{{Kind: "StatefulSet", Name: "db"}}}}}
	perm, err := newRotationPermissions(slog.New(slog.NewTextHandler(&logs, nil)), reg, cfg)
	if err != nil {
		t.Fatal(err)
	}

	_, err = workloadSelector(t.Context(), client, perm, "town", remediation.WorkloadRef{Kind: "StatefulSet", Name: "db"})
	if err == nil {
		t.Fatal("workloadSelector succeeded, want the 403")
	}
	for _, want := range []string{"permission denied to get statefulsets", `fix: grant get on statefulsets in namespace "town"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
	if got := counterValue(t, reg, map[string]string{"verb": "get", "resource": "statefulsets"}); got != 1 {
		t.Errorf(`authwatch_api_permission_errors_total{verb="get",resource="statefulsets"} = %v, want 1`, got)
	}
	if !strings.Contains(logs.String(), `msg="permission denied by the API server" component=remediation verb=get resource=statefulsets namespace=town`) {
		t.Errorf("no permission Warn in the log:\n%s", logs.String())
	}
}

// counterValue returns the authwatch_api_permission_errors_total series
// with labels, or fails the test.
func counterValue(t *testing.T, reg prometheus.Gatherer, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "authwatch_api_permission_errors_total" {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no authwatch_api_permission_errors_total series %v", labels)
	return 0
}
