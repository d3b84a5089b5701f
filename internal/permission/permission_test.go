package permission

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var podLogs = Access{Verb: Get, Resource: PodLogs}

func forbidden(user string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "pods/log"}, "api-1",
		errors.New(`User "`+user+`" cannot get resource "pods/log" in API group "" in the namespace "ns"`))
}

func TestReportRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		reg := prometheus.NewRegistry()
		r, err := New(Options{
			Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg,
			Accesses: []Access{podLogs}, LogInterval: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		records := func() int { return strings.Count(logs.String(), "permission denied by the API server") }

		for range 3 {
			if !r.Report(forbidden("a"), podLogs, "ns") {
				t.Fatal("Report(403) = false, want true")
			}
		}
		if got := records(); got != 1 {
			t.Errorf("after 3 equal errors: %d log records, want 1", got)
		}
		r.Report(forbidden("b"), podLogs, "ns")
		if got := records(); got != 2 {
			t.Errorf("after a changed error: %d log records, want 2", got)
		}
		r.Report(forbidden("b"), podLogs, "other")
		if got := records(); got != 3 {
			t.Errorf("after an error in another namespace: %d log records, want 3", got)
		}
		r.Report(forbidden("b"), podLogs, "ns")
		time.Sleep(time.Minute)
		r.Report(forbidden("b"), podLogs, "ns")
		if got := records(); got != 4 {
			t.Errorf("after one interval: %d log records, want 4", got)
		}
		if !strings.Contains(logs.String(), "repeats_since_last_log=1") {
			t.Errorf("log does not count the suppressed repeat:\n%s", logs.String())
		}
		if got := testutil.ToFloat64(r.errors.WithLabelValues("get", "pods/log")); got != 7 {
			t.Errorf("%s{get,pods/log} = %v, want 7", metricName, got)
		}
	})
}

func TestReportLogNamesFix(t *testing.T) {
	var logs bytes.Buffer
	r, err := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	r.Report(forbidden("a"), podLogs, "town-builder")
	r.Report(forbidden("a"), Access{Verb: List, Resource: Pods}, "")
	for _, want := range []string{
		`verb=get resource=pods/log namespace=town-builder`,
		`fix="grant get on pods/log in namespace \"town-builder\" (a Role and RoleBinding) to authwatch's ServiceAccount; deploy/ has the rules"`,
		`fix="grant list on pods in all namespaces (a ClusterRole and ClusterRoleBinding)`,
		`cannot get resource \"pods/log\"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

func TestReportIgnoresOtherErrors(t *testing.T) {
	var logs bytes.Buffer
	r, err := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: prometheus.NewRegistry(),
		Accesses: []Access{podLogs}})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		nil,
		errors.New("connection refused"),
		apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "api-1"),
		apierrors.NewUnauthorized("token expired"),
	} {
		if r.Report(err, podLogs, "ns") {
			t.Errorf("Report(%v) = true, want false", err)
		}
	}
	if got := testutil.ToFloat64(r.errors.WithLabelValues("get", "pods/log")); got != 0 {
		t.Errorf("%s{get,pods/log} = %v, want 0", metricName, got)
	}
	if logs.Len() > 0 {
		t.Errorf("logged other errors:\n%s", logs.String())
	}
}

func TestReportersShareCounter(t *testing.T) {
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	a, err := New(Options{Logger: logger, Registerer: reg, Accesses: []Access{podLogs}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Options{Logger: logger, Registerer: reg, Accesses: []Access{{Verb: Update, Resource: ConfigMaps}}})
	if err != nil {
		t.Fatalf("second reporter on one registry: %v", err)
	}
	a.Report(forbidden("a"), podLogs, "ns")
	b.Report(forbidden("a"), Access{Verb: Update, Resource: ConfigMaps}, "ns")
	want := `
# HELP authwatch_api_permission_errors_total Kubernetes API requests rejected with 403 Forbidden, by verb and resource; the ServiceAccount lacks an RBAC rule.
# TYPE authwatch_api_permission_errors_total counter
authwatch_api_permission_errors_total{resource="configmaps",verb="update"} 1
authwatch_api_permission_errors_total{resource="pods/log",verb="get"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metricName); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

func TestNewRejectsOtherCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricName, Help: "x"}, []string{"verb", "resource"}))
	if _, err := New(Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg}); err == nil {
		t.Error("New over a gauge of the same name = nil error, want an error")
	}
}
