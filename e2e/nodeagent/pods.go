package nodeagent

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podRunner runs the containers of one pod and writes its status. Its
// goroutines end when the pod's context is cancelled by stop.
type podRunner struct {
	a       *Agent
	key     podKey
	uid     types.UID
	pod     *corev1.Pod // as first seen; the spec of a pod does not change
	started metav1.Time

	containers []*container // in spec order; the slice is never modified

	dirty  chan struct{} // buffered; status needs writing
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the pod

	mu          sync.Mutex // guards terminating
	terminating bool

	volDir string     // the pod's Secret and ConfigMap volume files
	volMu  sync.Mutex // serializes syncVolumes
}

func (a *Agent) newPodRunner(pod *corev1.Pod) *podRunner {
	p := &podRunner{
		a:       a,
		key:     podKey{pod.Namespace, pod.Name},
		uid:     pod.UID,
		pod:     pod.DeepCopy(),
		started: metav1.Now(),
		dirty:   make(chan struct{}, 1),
	}
	for _, spec := range pod.Spec.Containers {
		p.containers = append(p.containers, &container{pod: p, spec: spec, stopped: make(chan struct{})})
	}
	return p
}

func (p *podRunner) start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	p.a.log.Info("pod started", "namespace", p.key.namespace, "pod", p.key.name, "node", p.pod.Spec.NodeName)
	dir, err := os.MkdirTemp("", "authwatch-nodeagent-volumes-")
	if err != nil {
		// Containers that read a volume fail to start and report the reason.
		p.a.log.Error("volume folder not created", "namespace", p.key.namespace, "pod", p.key.name, "err", err)
	}
	p.volDir = dir
	for _, c := range p.containers {
		p.wg.Go(func() { c.run(ctx) })
	}
	p.wg.Go(func() { p.writeStatusLoop(ctx) })
	p.wg.Go(func() { p.refreshVolumes(ctx) })
	p.markDirty()
}

// stop ends the pod's goroutines without writing status: the pod is gone
// or the agent is stopping.
func (p *podRunner) stop() {
	p.cancel()
	p.wg.Wait()
	if p.volDir != "" {
		os.RemoveAll(p.volDir)
	}
}

// refreshVolumes rewrites the volume files every VolumeSyncPeriod, so a
// patched Secret reaches running containers as a kubelet's sync does.
func (p *podRunner) refreshVolumes(ctx context.Context) {
	var last string
	for sleepCtx(ctx, p.a.opts.VolumeSyncPeriod) {
		err := p.syncVolumes(ctx)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != last && ctx.Err() == nil {
			if err != nil {
				p.a.log.Warn("volume sync failed", "namespace", p.key.namespace, "pod", p.key.name, "err", err)
			}
			last = msg
		}
	}
}

// terminate stops the containers of a pod that is being deleted, reports
// them terminated and then deletes the pod for good, as a kubelet does
// once its containers are dead. It can be called again while it works.
func (p *podRunner) terminate(ctx context.Context) {
	p.mu.Lock()
	if p.terminating {
		p.mu.Unlock()
		return
	}
	p.terminating = true
	p.mu.Unlock()

	for _, c := range p.containers {
		c.kill(0, "Completed")
	}
	p.wg.Go(func() {
		for _, c := range p.containers {
			c.waitStopped()
		}
		p.markDirty()
		p.deleteWhenReported(ctx)
	})
}

func (p *podRunner) isTerminating() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.terminating
}

func (p *podRunner) markDirty() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// deleteWhenReported deletes the pod with grace period zero, retrying while
// the API server is unavailable.
func (p *podRunner) deleteWhenReported(ctx context.Context) {
	zero := int64(0)
	for {
		// Give the status writer a moment so the final container states
		// are stored before the object goes.
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		err := p.a.client.CoreV1().Pods(p.key.namespace).Delete(ctx, p.key.name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &p.uid},
		})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return
		}
		p.a.log.Warn("pod deletion failed", "namespace", p.key.namespace, "pod", p.key.name, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// writeStatusLoop writes the pod status each time it changes, retrying
// while the API server is unavailable.
func (p *podRunner) writeStatusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.dirty:
		}
		for {
			err := p.writeStatus(ctx)
			if err == nil || ctx.Err() != nil || apierrors.IsNotFound(err) {
				break
			}
			p.a.log.Warn("pod status update failed", "namespace", p.key.namespace, "pod", p.key.name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (p *podRunner) writeStatus(ctx context.Context) error {
	pods := p.a.client.CoreV1().Pods(p.key.namespace)
	pod, err := pods.Get(ctx, p.key.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if pod.UID != p.uid {
		return apierrors.NewNotFound(corev1.Resource("pods"), p.key.name)
	}
	pod.Status = p.status(pod.Status)
	_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		p.markDirty()
		return nil
	}
	return err
}

// status builds the pod status from the containers' states.
func (p *podRunner) status(old corev1.PodStatus) corev1.PodStatus {
	st := corev1.PodStatus{
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     "127.0.0.1",
		PodIPs:    []corev1.PodIP{{IP: "127.0.0.1"}},
		StartTime: &p.started,
		QOSClass:  old.QOSClass,
	}
	running, succeeded, failed, waiting := 0, 0, 0, 0
	for _, c := range p.containers {
		cs := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil && !c.willRestart():
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		default:
			waiting++
		}
	}
	total := len(p.containers)
	switch {
	case succeeded == total:
		st.Phase = corev1.PodSucceeded
	case succeeded+failed == total:
		st.Phase = corev1.PodFailed
	case running > 0 || succeeded+failed > 0:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	ready := running == total && !p.isTerminating()
	st.Conditions = []corev1.PodCondition{
		condition(old, corev1.PodScheduled, true, ""),
		condition(old, corev1.PodInitialized, true, ""),
		condition(old, corev1.ContainersReady, ready, "ContainersNotReady"),
		condition(old, corev1.PodReady, ready, "ContainersNotReady"),
	}
	return st
}

func condition(old corev1.PodStatus, typ corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
	c := corev1.PodCondition{Type: typ, Status: corev1.ConditionFalse, Reason: reason, LastTransitionTime: metav1.Now()}
	if ok {
		c.Status = corev1.ConditionTrue
		c.Reason = ""
	}
	for _, prev := range old.Conditions {
		if prev.Type == typ && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		}
	}
	return c
}

// lookup returns the container name of pod namespace/name, or an error
// that names what is missing.
func (a *Agent) lookup(namespace, pod, name string) (*container, error) {
	a.mu.Lock()
	p := a.pods[podKey{namespace, pod}]
	a.mu.Unlock()
	if p == nil {
		return nil, errors.New("pod " + namespace + "/" + pod + " is not running on this node agent")
	}
	for _, c := range p.containers {
		if c.spec.Name == name {
			return c, nil
		}
	}
	return nil, errors.New("container " + name + " is not valid for pod " + pod)
}
