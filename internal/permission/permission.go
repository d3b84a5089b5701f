// Package permission counts and logs the requests that the API server
// rejects with 403 Forbidden, naming the verb, the resource and the
// RBAC rule that would allow them. Several components share one counter,
// authwatch_api_permission_errors_total{verb,resource}; each builds its
// own Reporter on the same registry.
package permission

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Verb is a Kubernetes API verb that authwatch uses. Only the constants
// below are metric label values.
type Verb string

// Verbs that authwatch requests.
const (
	Get    Verb = "get"
	List   Verb = "list"
	Watch  Verb = "watch"
	Create Verb = "create"
	Update Verb = "update"
	Patch  Verb = "patch"
)

// Resource is a Kubernetes API resource or subresource that authwatch
// uses. Only the constants below are metric label values.
type Resource string

// Resources that authwatch requests.
const (
	Pods         Resource = "pods"
	PodLogs      Resource = "pods/log"
	PodExec      Resource = "pods/exec"
	ConfigMaps   Resource = "configmaps"
	Secrets      Resource = "secrets"
	Leases       Resource = "leases"
	Deployments  Resource = "deployments"
	StatefulSets Resource = "statefulsets"
	DaemonSets   Resource = "daemonsets"
	ReplicaSets  Resource = "replicasets"
	Events       Resource = "events"
)

// Access is one (verb, resource) pair.
type Access struct {
	Verb     Verb
	Resource Resource
}

// metricName is the counter that every Reporter on a registry shares.
const metricName = "authwatch_api_permission_errors_total"

// Options configures a Reporter. Logger and Registerer are required.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Accesses are the pairs that the component requests; their series
	// start at zero.
	Accesses []Access
	// LogInterval is the minimum time between two log records for the
	// same access, namespace and error; 0 means one minute. A changed
	// error is logged at once.
	LogInterval time.Duration
}

// Reporter counts and logs 403 responses. It is safe for concurrent use.
type Reporter struct {
	log      *slog.Logger
	errors   *prometheus.CounterVec
	interval time.Duration

	mu    sync.Mutex
	state map[logKey]*logState // guarded by mu
}

type logKey struct {
	access    Access
	namespace string
}

type logState struct {
	message    string
	logged     time.Time
	suppressed int // errors since the last record
}

// New registers the shared counter, or reuses it when another Reporter
// registered it on the same registry, and starts the series of
// opts.Accesses at zero.
func New(opts Options) (*Reporter, error) {
	if opts.Logger == nil || opts.Registerer == nil {
		return nil, errors.New("permission: missing options Logger or Registerer")
	}
	if opts.LogInterval <= 0 {
		opts.LogInterval = time.Minute
	}
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricName,
		Help: "Kubernetes API requests rejected with 403 Forbidden, by verb and resource; the ServiceAccount lacks an RBAC rule.",
	}, []string{"verb", "resource"})
	if err := opts.Registerer.Register(counter); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("permission: register metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("permission: %s is registered with another type: %w", metricName, err)
		}
		counter = existing
	}
	for _, a := range opts.Accesses {
		counter.WithLabelValues(string(a.Verb), string(a.Resource))
	}
	return &Reporter{
		log:      opts.Logger,
		errors:   counter,
		interval: opts.LogInterval,
		state:    map[logKey]*logState{},
	}, nil
}

// Report counts err and logs it, at most once per LogInterval for the
// same access and namespace unless the error changes, when the API
// server rejected the request with 403 Forbidden. It returns whether it
// did; other errors are left to the caller. namespace is "" for a
// request across all namespaces.
func (r *Reporter) Report(err error, a Access, namespace string) bool {
	if err == nil || !apierrors.IsForbidden(err) {
		return false
	}
	r.errors.WithLabelValues(string(a.Verb), string(a.Resource)).Inc()

	now := time.Now()
	msg := err.Error()
	r.mu.Lock()
	st := r.state[logKey{a, namespace}]
	if st == nil {
		st = &logState{}
		r.state[logKey{a, namespace}] = st
	}
	if st.message == msg && now.Sub(st.logged) < r.interval {
		st.suppressed++
		r.mu.Unlock()
		return true
	}
	suppressed := st.suppressed
	st.message, st.logged, st.suppressed = msg, now, 0
	r.mu.Unlock()

	r.log.Warn("permission denied by the API server",
		"verb", a.Verb, "resource", a.Resource, "namespace", namespace,
		"fix", Fix(a, namespace), "repeats_since_last_log", suppressed, "err", err)
	return true
}

// Fix returns the RBAC change that allows the access, for a log record
// or an error message.
func Fix(a Access, namespace string) string {
	scope := fmt.Sprintf("in namespace %q (a Role and RoleBinding)", namespace)
	if namespace == "" {
		scope = "in all namespaces (a ClusterRole and ClusterRoleBinding)"
	}
	return fmt.Sprintf("grant %s on %s %s to authwatch's ServiceAccount; deploy/ has the rules", a.Verb, a.Resource, scope)
}
