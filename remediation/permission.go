package remediation

import (
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"

	"github.com/authwatch/authwatch/internal/permission"
)

// ForbiddenError is a request that the API server rejected with 403
// Forbidden. Its message names the verb, the resource and the RBAC rule
// that would allow the request, so a step's failure message carries the
// fix.
type ForbiddenError struct {
	Access    permission.Access
	Namespace string
	Err       error
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("permission denied to %s %s: %v; fix: %s",
		e.Access.Verb, e.Access.Resource, e.Err, permission.Fix(e.Access, e.Namespace))
}

func (e *ForbiddenError) Unwrap() error { return e.Err }

// CheckForbidden reports err to reporter and returns it as a
// *ForbiddenError when the API server rejected the access a with 403
// Forbidden. It returns any other err unchanged. A nil reporter reports
// nothing, but the error still names the fix.
func CheckForbidden(reporter *permission.Reporter, err error, a permission.Access, namespace string) error {
	// A WebSocket upgrade for pods/exec that the API server rejects comes
	// back as an UpgradeFailureError, which carries the 403 but does not
	// unwrap to it.
	var upgrade *httpstream.UpgradeFailureError
	if errors.As(err, &upgrade) && apierrors.IsForbidden(upgrade.Cause) {
		err = upgrade.Cause
	}
	if err == nil || !apierrors.IsForbidden(err) {
		return err
	}
	if reporter != nil {
		reporter.Report(err, a, namespace)
	}
	return &ForbiddenError{Access: a, Namespace: namespace, Err: err}
}

// permissions reports the 403 responses of the rotation's API requests.
type permissions struct{ reporter *permission.Reporter }

func (p permissions) check(err error, verb permission.Verb, resource permission.Resource, namespace string) error {
	return CheckForbidden(p.reporter, err, permission.Access{Verb: verb, Resource: resource}, namespace)
}

// WorkloadResource returns the API resource of a workload kind:
// deployments, statefulsets or daemonsets.
func WorkloadResource(kind string) permission.Resource {
	switch kind {
	case "StatefulSet":
		return permission.StatefulSets
	case "DaemonSet":
		return permission.DaemonSets
	}
	return permission.Deployments
}

// Accesses returns the API requests that rotations of cfg's targets
// make. Pass them as permission.Options.Accesses so that their error
// series start at zero.
func Accesses(cfg Config) []permission.Access {
	a := []permission.Access{
		{Verb: permission.Get, Resource: permission.Secrets},
		{Verb: permission.Patch, Resource: permission.Secrets},
		{Verb: permission.Create, Resource: permission.Secrets},
		{Verb: permission.Update, Resource: permission.Secrets},
		{Verb: permission.Get, Resource: permission.Pods},
		{Verb: permission.Create, Resource: permission.Events},
	}
	kinds := map[permission.Resource]bool{}
	exec := false
	for _, t := range cfg.Targets {
		for _, w := range t.Restart {
			kinds[WorkloadResource(w.Kind)] = true
		}
		exec = exec || t.Source.Exec != nil
	}
	for _, res := range []permission.Resource{permission.Deployments, permission.StatefulSets, permission.DaemonSets} {
		if kinds[res] {
			a = append(a, permission.Access{Verb: permission.Get, Resource: res}, permission.Access{Verb: permission.Patch, Resource: res})
		}
	}
	if kinds[permission.Deployments] {
		a = append(a, permission.Access{Verb: permission.List, Resource: permission.ReplicaSets})
	}
	if exec {
		a = append(a, permission.Access{Verb: permission.List, Resource: permission.Pods}, permission.Access{Verb: permission.Create, Resource: permission.PodExec})
	}
	return a
}
