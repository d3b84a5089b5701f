package remediation

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/httpstream"
	k8stesting "k8s.io/client-go/testing"

	"github.com/authwatch/authwatch/internal/permission"
)

// denyReactor rejects verb on resource (and only the object name, when
// set) with 403 Forbidden, as the API server does for a missing RBAC rule.
func denyReactor(verb, resource, name string) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetVerb() != verb || a.GetResource().Resource != resource {
			return false, nil, nil
		}
		if name != "" && actionName(a) != name {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name,
			errors.New(`User "system:serviceaccount:authwatch:authwatch" cannot `+verb+` resource "`+resource+`"`))
	}
}

func actionName(a k8stesting.Action) string {
	switch a := a.(type) {
	case k8stesting.GetAction:
		return a.GetName()
	case k8stesting.PatchAction:
		return a.GetName()
	case k8stesting.CreateAction:
		if o, ok := a.GetObject().(metav1.Object); ok {
			return o.GetName()
		}
	case k8stesting.UpdateAction:
		if o, ok := a.GetObject().(metav1.Object); ok {
			return o.GetName()
		}
	}
	return ""
}

func TestRotateForbiddenNamesVerbAndFix(t *testing.T) {
	backup := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: BackupSecretName(testTarget), Namespace: testNS,
		Labels: map[string]string{labelManagedBy: labelManagedByName},
	}}
	tests := []struct {
		verb, resource, name string
		withBackup           bool
		// redacted: the patch error is rebuilt from its redacted text,
		// so it no longer wraps the API error.
		redacted bool
		step     Step
		outcome  Outcome
	}{
		{verb: "get", resource: "secrets", name: testSecret, step: StepPreflight, outcome: OutcomeFailed},
		{verb: "get", resource: "deployments", step: StepPreflight, outcome: OutcomeFailed},
		{verb: "create", resource: "secrets", step: StepBackup, outcome: OutcomeFailed},
		{verb: "update", resource: "secrets", withBackup: true, step: StepBackup, outcome: OutcomeFailed},
		{verb: "patch", resource: "secrets", name: testSecret, step: StepPatch, outcome: OutcomeFailed, redacted: true},
		{verb: "patch", resource: "deployments", step: StepRestart, outcome: OutcomeFailed},
		{verb: "list", resource: "replicasets", step: StepRollout, outcome: OutcomeFailed},
		// A lost Event is logged and counted; the rotation goes on.
		{verb: "create", resource: "events", step: StepDone, outcome: OutcomeSucceeded},
	}
	for _, tc := range tests {
		t.Run(tc.verb+" "+tc.resource, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				objects := []runtime.Object{testSecretObject("old", nil), testDeployment()}
				if tc.withBackup {
					objects = append(objects, backup.DeepCopy())
				}
				h := newHarness(t, testTargetConfig(), objects...)
				fakeController(t, h.cs, false)
				h.source.token = "new-opaque-token"
				h.cs.PrependReactor(tc.verb, tc.resource, denyReactor(tc.verb, tc.resource, tc.name))

				res := h.rot.Rotate(t.Context(), automatic())
				if res.Outcome != tc.outcome || (tc.outcome == OutcomeFailed && res.Step != tc.step) {
					t.Fatalf("result = %s at %s (%v), want %s at %s", res.Outcome, res.Step, res.Err, tc.outcome, tc.step)
				}
				denied := "permission denied to " + tc.verb + " " + tc.resource
				fix := "fix: grant " + tc.verb + " on " + tc.resource + ` in namespace "` + testNS + `"`
				if tc.outcome == OutcomeFailed {
					var fe *ForbiddenError
					if !tc.redacted && (!errors.As(res.Err, &fe) || !apierrors.IsForbidden(res.Err)) {
						t.Errorf("err = %v, want a *ForbiddenError that is still IsForbidden", res.Err)
					}
					final := h.reporter.final(t).Message
					for _, want := range []string{denied, fix} {
						if !strings.Contains(final, want) {
							t.Errorf("final report %q lacks %q", final, want)
						}
					}
				}
				if got := permissionErrors(t, h.reg, tc.verb, tc.resource); got < 1 {
					t.Errorf("authwatch_api_permission_errors_total{verb=%q,resource=%q} = %v, want >= 1", tc.verb, tc.resource, got)
				}
				logs := h.logs.String()
				if !strings.Contains(logs, `"msg":"permission denied by the API server","verb":"`+tc.verb+`","resource":"`+tc.resource+`"`) {
					t.Errorf("no permission Warn for %s %s in the log:\n%s", tc.verb, tc.resource, logs)
				}
				if strings.Contains(logs, "new-opaque-token") || (res.Err != nil && strings.Contains(res.Err.Error(), "new-opaque-token")) {
					t.Error("the new token appears in the log or the error")
				}
			})
		})
	}
}

func TestAccessesFollowConfig(t *testing.T) {
	target := testTargetConfig()
	target.Restart = append(target.Restart, WorkloadRef{Kind: "StatefulSet", Name: "db"})
	target.Source = Source{Exec: &ExecSource{Namespace: testNS, Selector: "app=django", Command: []string{"true"}}}
	got := map[string]bool{}
	for _, a := range Accesses(Config{Targets: []Target{target}}) {
		got[string(a.Verb)+" "+string(a.Resource)] = true
	}
	for _, want := range []string{"get secrets", "patch secrets", "patch deployments", "list replicasets", "patch statefulsets", "create pods/exec", "create events"} {
		if !got[want] {
			t.Errorf("Accesses lacks %s: %v", want, got)
		}
	}
	if got["patch daemonsets"] {
		t.Error("Accesses lists daemonsets, which no target restarts")
	}
}

// permissionErrors returns the value of one
// authwatch_api_permission_errors_total series, or fails the test.
func permissionErrors(t *testing.T, reg prometheus.Gatherer, verb, resource string) float64 {
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
			if labels["verb"] == verb && labels["resource"] == resource {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no authwatch_api_permission_errors_total{verb=%q,resource=%q} series", verb, resource)
	return 0
}

func TestCheckForbiddenExecUpgrade(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods/exec"}, "django-0",
		errors.New(`User "system:serviceaccount:authwatch:authwatch" cannot create resource "pods/exec"`))
	a := permission.Access{Verb: permission.Create, Resource: permission.PodExec}

	err := CheckForbidden(nil, &httpstream.UpgradeFailureError{Cause: forbidden}, a, testNS)
	var fe *ForbiddenError
	if !errors.As(err, &fe) || fe.Access != a {
		t.Fatalf("err = %v, want a *ForbiddenError for create pods/exec", err)
	}
	if !strings.Contains(err.Error(), `fix: grant create on pods/exec in namespace "town-builder"`) {
		t.Errorf("err = %v, want the fix", err)
	}

	other := &httpstream.UpgradeFailureError{Cause: errors.New("bad handshake")}
	if err := CheckForbidden(nil, other, a, testNS); err != error(other) {
		t.Errorf("CheckForbidden changed a non-403 upgrade failure to %v", err)
	}
}
