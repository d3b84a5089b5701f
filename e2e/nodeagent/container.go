package nodeagent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// container runs the instances of one container of a pod, restarting it
// as the pod's restartPolicy requires.
type container struct {
	pod     *podRunner
	spec    corev1.Container
	stopped chan struct{} // closed when run returns

	mu             sync.Mutex // guards the fields below
	current        *instance  // nil before the first start
	previous       *instance
	restarts       int32
	waitingReason  string
	waitingMessage string
	killed         bool // terminate was requested before an instance ran
}

// Record is one line a container wrote, kept for tests to compare with
// what a log reader received.
type Record struct {
	Namespace   string
	Pod         string
	PodUID      types.UID
	Container   string
	ContainerID string // with the "authwatch://" runtime prefix
	Restart     int32  // restart count of the instance that wrote it
	Time        time.Time
	Stream      string // "stdout" or "stderr"
	Text        string
}

func (c *container) run(ctx context.Context) {
	defer close(c.stopped)
	a := c.pod.a
	for {
		if ctx.Err() != nil || c.pod.isTerminating() {
			return
		}
		env, err := a.resolveEnv(ctx, c.pod.pod, &c.spec)
		if err == nil {
			err = c.pod.syncVolumes(ctx)
		}
		var prog program
		reason := "CreateContainerConfigError"
		if err == nil {
			prog, err = newProgram(&c.spec)
			reason = "CreateContainerError"
		}
		if err != nil {
			c.mu.Lock()
			changed := c.waitingMessage != err.Error()
			c.waitingReason, c.waitingMessage = reason, err.Error()
			c.mu.Unlock()
			if changed {
				a.log.Warn("container cannot start", "namespace", c.pod.key.namespace, "pod", c.pod.key.name,
					"container", c.spec.Name, "reason", reason, "err", err)
				c.pod.markDirty()
			}
			if !sleepCtx(ctx, a.opts.RestartDelay) {
				return
			}
			continue
		}

		inst := c.startInstance(ctx)
		c.pod.markDirty()
		code, why := prog.run(inst.ctx, inst, env)
		inst.finish(code, why)
		c.pod.markDirty()

		if ctx.Err() != nil || c.pod.isTerminating() || !c.willRestart() {
			return
		}
		if !sleepCtx(ctx, a.opts.RestartDelay) {
			return
		}
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
	}
}

func (c *container) startInstance(ctx context.Context) *instance {
	id := make([]byte, 16)
	rand.Read(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	inst := &instance{
		c:       c,
		id:      "authwatch://" + hex.EncodeToString(id),
		restart: c.restarts,
		started: time.Now(),
		changed: make(chan struct{}),
	}
	inst.ctx, inst.cancel = context.WithCancel(ctx)
	if c.current != nil {
		c.previous = c.current
	}
	c.current = inst
	c.waitingReason, c.waitingMessage = "", ""
	if c.killed {
		inst.kill(0, "Completed")
	}
	return inst
}

// kill ends the running instance with exitCode and reason; a pod that is
// being deleted also keeps the next instance from starting.
func (c *container) kill(exitCode int32, reason string) {
	c.mu.Lock()
	cur := c.current
	if c.pod.isTerminating() {
		c.killed = true
	}
	c.mu.Unlock()
	if cur != nil {
		cur.kill(exitCode, reason)
	}
}

func (c *container) waitStopped() { <-c.stopped }

// willRestart reports whether the container starts again after its
// current instance exits.
func (c *container) willRestart() bool {
	if c.pod.isTerminating() {
		return false
	}
	c.mu.Lock()
	cur := c.current
	c.mu.Unlock()
	switch c.pod.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		if cur == nil {
			return true
		}
		code, _, done := cur.exit()
		return !done || code != 0
	default:
		return true
	}
}

func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      c.spec.Image,
		RestartCount: c.restarts,
	}
	if c.previous != nil {
		cs.LastTerminationState = c.previous.state()
	}
	switch {
	case c.waitingReason != "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waitingReason, Message: c.waitingMessage}
	case c.current == nil:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	default:
		cs.ContainerID = c.current.id
		cs.State = c.current.state()
		if cs.State.Terminated != nil && c.willRestartLocked() {
			// Between an exit and the restart a kubelet reports the exit
			// as the last state and the container as waiting.
			cs.LastTerminationState = cs.State
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: "back-off restarting container " + c.spec.Name}}
		}
	}
	running := cs.State.Running != nil
	cs.Ready = running
	cs.Started = &running
	return cs
}

// willRestartLocked is willRestart for a caller holding c.mu.
func (c *container) willRestartLocked() bool {
	if c.pod.isTerminating() {
		return false
	}
	switch c.pod.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		code, _, done := c.current.exit()
		return !done || code != 0
	default:
		return true
	}
}

// instance is one run of a container: its log and exit.
type instance struct {
	c       *container
	id      string
	restart int32
	started time.Time
	ctx     context.Context // cancelled by kill; ends the program
	cancel  context.CancelFunc

	mu       sync.Mutex // guards the fields below
	lines    []logLine
	rotated  int           // index of the first line in the current log file
	changed  chan struct{} // closed and replaced on every change a reader waits for
	stalled  bool
	cuts     int // number of CutStreams calls; readers stop when it moves
	done     bool
	code     int32
	reason   string
	finished time.Time
	killed   bool
	killCode int32
	killWhy  string
}

type logLine struct {
	time   time.Time
	stream string
	text   string
}

// notifyLocked wakes the readers waiting on changed; the caller holds mu.
func (i *instance) notifyLocked() {
	close(i.changed)
	i.changed = make(chan struct{})
}

// write appends one line to the instance's log, stamped now.
func (i *instance) write(stream, text string) {
	now := time.Now().UTC()
	i.mu.Lock()
	if i.done {
		i.mu.Unlock()
		return
	}
	// The runtime's clock may return the same instant twice; the log keeps
	// them in order either way.
	i.lines = append(i.lines, logLine{time: now, stream: stream, text: text})
	i.notifyLocked()
	i.mu.Unlock()
	p := i.c.pod
	p.a.record(Record{
		Namespace: p.key.namespace, Pod: p.key.name, PodUID: p.uid, Container: i.c.spec.Name,
		ContainerID: i.id, Restart: i.restart, Time: now, Stream: stream, Text: text,
	})
}

func (i *instance) kill(code int32, why string) {
	i.mu.Lock()
	if !i.done && !i.killed {
		i.killed, i.killCode, i.killWhy = true, code, why
	}
	i.mu.Unlock()
	i.cancel()
}

func (i *instance) finish(code int32, why string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.done {
		return
	}
	if i.killed {
		code, why = i.killCode, i.killWhy
	}
	i.done, i.code, i.reason, i.finished = true, code, why, time.Now()
	i.notifyLocked()
	i.cancel()
}

func (i *instance) exit() (code int32, reason string, done bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.code, i.reason, i.done
}

func (i *instance) state() corev1.ContainerState {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.done {
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(i.started)}}
	}
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode:    i.code,
		Reason:      i.reason,
		StartedAt:   metav1.NewTime(i.started),
		FinishedAt:  metav1.NewTime(i.finished),
		ContainerID: i.id,
	}}
}

func (a *Agent) record(r Record) {
	a.mu.Lock()
	a.records = append(a.records, r)
	a.mu.Unlock()
}

// sleepCtx waits for d and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
