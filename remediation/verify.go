package remediation

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/rules"
)

// maxVerifyPods bounds the pods one verification remembers.
const maxVerifyPods = 1000

// verification collects the matches that arrive while a rotation is
// being verified. HandleMatch fills it; the rotation's goroutine judges it.
type verification struct {
	target    *Target
	namespace string
	workloads map[string]bool
	since     time.Time

	mu       sync.Mutex
	failures map[string]int // pod name → matches since `since`; guarded by mu
	overflow int            // matches from pods past maxVerifyPods; guarded by mu
}

func (v *verification) observe(m *rules.Match) {
	src := m.Line.Source
	if src.Namespace != v.namespace || !v.workloads[src.Workload] || !v.target.countsCategory(m.Category) {
		return
	}
	if m.Line.Time.Before(v.since) || m.Severity < rules.SeverityError {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.failures[src.Pod]; !ok && len(v.failures) >= maxVerifyPods {
		v.overflow++
		return
	}
	v.failures[src.Pod]++
}

func (v *verification) snapshot() (map[string]int, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]int, len(v.failures))
	for k, n := range v.failures {
		out[k] = n
	}
	return out, v.overflow
}

// HandleMatch passes a match to the verifications in progress. cmd calls it
// for every match; it does not block.
func (r *Rotator) HandleMatch(m *rules.Match) {
	r.mu.Lock()
	vs := make([]*verification, 0, len(r.verifications))
	for v := range r.verifications {
		vs = append(vs, v)
	}
	r.mu.Unlock()
	for _, v := range vs {
		v.observe(m)
	}
}

func (r *Rotator) startVerification(t *Target, since time.Time) *verification {
	v := &verification{
		target:    t,
		namespace: t.Secret.Namespace,
		workloads: map[string]bool{},
		since:     since,
		failures:  map[string]int{},
	}
	for w := range t.workloads {
		v.workloads[w] = true
	}
	for _, w := range t.Restart {
		v.workloads[w.String()] = true
	}
	r.mu.Lock()
	r.verifications[v] = struct{}{}
	r.mu.Unlock()
	return v
}

func (r *Rotator) stopVerification(v *verification) {
	r.mu.Lock()
	delete(r.verifications, v)
	r.mu.Unlock()
}

// newPods decides which pods count in verification: pods of the new
// ReplicaSet for a Deployment (by name prefix), and for other kinds, or
// when no restart happened, pods created at or after `since`.
type newPods struct {
	r         *Rotator
	namespace string
	prefixes  []string
	since     time.Time // zero: every pod counts
	known     map[string]bool
}

func (n *newPods) isNew(ctx context.Context, pod string) (bool, error) {
	for _, p := range n.prefixes {
		if strings.HasPrefix(pod, p) {
			return true, nil
		}
	}
	if n.since.IsZero() {
		return true, nil
	}
	if v, ok := n.known[pod]; ok {
		return v, nil
	}
	p, err := n.r.client.CoreV1().Pods(n.namespace).Get(ctx, pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// A pod that is gone was an old one on its way out.
		n.known[pod] = false
		return false, nil
	case err != nil:
		// Verification cannot tell old from new: it must not pass.
		err = n.r.perm.check(err, permission.Get, permission.Pods, n.namespace)
		return false, fmt.Errorf("remediation: read pod %s/%s to tell whether it is new: %w", n.namespace, pod, err)
	}
	isNew := !p.CreationTimestamp.Time.Before(n.since.Truncate(time.Second))
	n.known[pod] = isNew
	return isNew, nil
}

// verify waits out the target's window and returns an error naming the
// new pods that still failed, or nil when none did. It reads only.
// NOTE: the evidence is the absence of matches, so a new pod that logs
// nothing at all, or whose log stream is down, passes.
func (r *Rotator) verify(ctx context.Context, t *Target, v *verification, pods *newPods, window time.Duration) error {
	deadline := time.NewTimer(window)
	defer deadline.Stop()
	tick := time.NewTicker(r.pollInterval)
	defer tick.Stop()
	for {
		failing, err := r.failingNewPods(ctx, v, pods)
		if err != nil {
			return err
		}
		if len(failing) > 0 {
			return fmt.Errorf("remediation: new pods still fail after the rotation: %s", strings.Join(failing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			failing, err := r.failingNewPods(ctx, v, pods)
			if err != nil {
				return err
			}
			if len(failing) > 0 {
				return fmt.Errorf("remediation: new pods still fail after the rotation: %s", strings.Join(failing, ", "))
			}
			return nil
		case <-tick.C:
		}
	}
}

func (r *Rotator) failingNewPods(ctx context.Context, v *verification, pods *newPods) ([]string, error) {
	counts, overflow := v.snapshot()
	var failing []string
	for pod, n := range counts {
		isNew, err := pods.isNew(ctx, pod)
		if err != nil {
			return nil, err
		}
		if isNew {
			failing = append(failing, fmt.Sprintf("%s (%d matches)", pod, n))
		}
	}
	if overflow > 0 && len(failing) > 0 {
		failing = append(failing, fmt.Sprintf("%d matches from further pods", overflow))
	}
	return failing, nil
}
