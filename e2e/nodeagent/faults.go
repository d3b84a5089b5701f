package nodeagent

import (
	"fmt"
	"strings"
)

// RestartContainer kills the running instance of a container with exit
// code 137, as an OOM kill or a failed liveness probe would. The pod's
// restartPolicy then starts a new instance.
func (a *Agent) RestartContainer(namespace, pod, name string) error {
	c, err := a.lookup(namespace, pod, name)
	if err != nil {
		return fmt.Errorf("nodeagent: restart container: %w", err)
	}
	c.mu.Lock()
	cur := c.current
	c.mu.Unlock()
	if cur == nil {
		return fmt.Errorf("nodeagent: restart container %s/%s/%s: not started yet", namespace, pod, name)
	}
	cur.kill(137, "Error")
	return nil
}

// RotateLog starts a new log file for the running instance of a
// container. Requests that start afterwards see only lines written after
// the rotation, because a kubelet reads only the current file. Streams
// already following go on without a gap.
func (a *Agent) RotateLog(namespace, pod, name string) error {
	inst, err := a.current(namespace, pod, name)
	if err != nil {
		return fmt.Errorf("nodeagent: rotate log: %w", err)
	}
	inst.mu.Lock()
	inst.rotated = len(inst.lines)
	inst.mu.Unlock()
	return nil
}

// CutStreams aborts every open log stream of the running instance of a
// container mid-response, as a broken connection would. The container
// goes on writing.
func (a *Agent) CutStreams(namespace, pod, name string) error {
	inst, err := a.current(namespace, pod, name)
	if err != nil {
		return fmt.Errorf("nodeagent: cut streams: %w", err)
	}
	inst.mu.Lock()
	inst.cuts++
	inst.notifyLocked()
	inst.mu.Unlock()
	return nil
}

// StallStreams stops sending lines on every log stream of the running
// instance of a container, open or opened later, while the container goes
// on writing. The connections stay open. The returned function resumes
// them.
func (a *Agent) StallStreams(namespace, pod, name string) (resume func(), err error) {
	inst, err := a.current(namespace, pod, name)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: stall streams: %w", err)
	}
	inst.mu.Lock()
	inst.stalled = true
	inst.notifyLocked()
	inst.mu.Unlock()
	return func() {
		inst.mu.Lock()
		inst.stalled = false
		inst.notifyLocked()
		inst.mu.Unlock()
	}, nil
}

func (a *Agent) current(namespace, pod, name string) (*instance, error) {
	c, err := a.lookup(namespace, pod, name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == nil {
		return nil, fmt.Errorf("container %s/%s/%s not started yet", namespace, pod, name)
	}
	return c.current, nil
}

// Records returns the lines containers wrote whose namespace matches
// (empty matches all) and for which keep returns true (nil keeps all), in
// the order they were written.
func (a *Agent) Records(namespace string, keep func(Record) bool) []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Record
	for _, r := range a.records {
		if (namespace == "" || r.Namespace == namespace) && (keep == nil || keep(r)) {
			out = append(out, r)
		}
	}
	return out
}

// CountRecords counts the lines written in namespace that contain substr.
func (a *Agent) CountRecords(namespace, substr string) int {
	return len(a.Records(namespace, func(r Record) bool { return strings.Contains(r.Text, substr) }))
}
