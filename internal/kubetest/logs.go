package kubetest

import (
	"bufio"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Log is the log of one container instance, as the kubelet keeps it.
type Log struct {
	mu      sync.Mutex
	entries []Entry
	closed  bool
	changed chan struct{} // closed and replaced on each change
	// max is how many entries are kept; older ones are rotated away.
	max     int
	rotated int // entries dropped by rotation
}

// Entry is one line of a container log.
type Entry struct {
	Time time.Time
	Text []byte
	// NoNewline writes the line without its newline, as at the end of a
	// log whose last line is unfinished.
	NoNewline bool
}

// Log returns the log of a container instance, creating it empty.
func (s *Server) Log(containerID string) *Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logs[containerID]
	if l == nil {
		l = &Log{changed: make(chan struct{})}
		s.logs[containerID] = l
	}
	return l
}

// SetMaxEntries keeps only the newest n entries from now on (0 keeps all).
func (l *Log) SetMaxEntries(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max = n
}

// Write appends a line with timestamp ts.
func (l *Log) Write(ts time.Time, text string) { l.Append(Entry{Time: ts, Text: []byte(text)}) }

// Append appends entries.
func (l *Log) Append(es ...Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, es...)
	if l.max > 0 && len(l.entries) > l.max {
		drop := len(l.entries) - l.max
		l.rotated += drop
		l.entries = append(l.entries[:0], l.entries[drop:]...)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Close marks the instance as terminated: follow streams end after the
// last entry.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// Len returns the number of entries written, including rotated ones.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rotated + len(l.entries)
}

// LogRequest describes one pods/log request.
type LogRequest struct {
	Namespace, Pod, Container, ContainerID string
	Follow, Previous                       bool
	Since                                  time.Time
	// N counts the requests for this container instance, from 1.
	N int
}

// FaultKind is the action the server takes in place of writing the next
// line.
type FaultKind int

// Faults.
const (
	FaultNone FaultKind = iota
	// FaultEOF ends the response cleanly.
	FaultEOF
	// FaultReset resets the HTTP/2 stream.
	FaultReset
	// FaultResetMidLine writes the first half of the line, then resets.
	FaultResetMidLine
	// FaultStall stops writing and keeps the stream open until the
	// client gives up.
	FaultStall
	// FaultInject writes Fault.Text as a raw line (kubelet error text),
	// then goes on.
	FaultInject
)

// Fault is the action for the next line of a response.
type Fault struct {
	Kind FaultKind
	Text string
}

// LogFaultFunc picks a fault before each line: written counts the lines
// written so far in this response.
type LogFaultFunc func(req LogRequest, written int) Fault

// SetLogFault installs f (nil for none).
func (s *Server) SetLogFault(f LogFaultFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// instanceID applies the kubelet's rules for which container instance a
// log request reads.
func instanceID(pod *corev1.Pod, container string, previous bool) (string, string) {
	var st *corev1.ContainerStatus
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range list {
			if list[i].Name == container {
				st = &list[i]
			}
		}
	}
	if st == nil {
		return "", fmt.Sprintf("container %s is not valid for pod %s", container, pod.Name)
	}
	last := st.LastTerminationState.Terminated
	switch {
	case previous:
		if last == nil || last.ContainerID == "" {
			return "", fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name)
		}
		return last.ContainerID, ""
	case st.State.Running != nil:
		return st.ContainerID, ""
	case st.State.Terminated != nil:
		if st.State.Terminated.ContainerID != "" {
			return st.State.Terminated.ContainerID, ""
		}
	}
	if last != nil && last.ContainerID != "" {
		return last.ContainerID, ""
	}
	return "", fmt.Sprintf("container %q in pod %q is waiting to start", container, pod.Name)
}

func (s *Server) podLog(w http.ResponseWriter, r *http.Request, ns, name string) {
	q := r.URL.Query()
	pod := s.Pod(ns, name)
	if pod == nil {
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", name))
		return
	}
	container := q.Get("container")
	if container == "" && len(pod.Spec.Containers) == 1 {
		container = pod.Spec.Containers[0].Name
	}
	req := LogRequest{
		Namespace: ns, Pod: name, Container: container,
		Follow: q.Get("follow") == "true", Previous: q.Get("previous") == "true",
	}
	id, msg := instanceID(pod, container, req.Previous)
	if msg != "" {
		writeStatus(w, http.StatusBadRequest, "BadRequest", msg)
		return
	}
	req.ContainerID = id
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("invalid sinceTime %q", v))
			return
		}
		req.Since = t
	}
	timestamps := q.Get("timestamps") == "true"
	l := s.Log(id)

	s.mu.Lock()
	s.stats.LogRequests++
	s.stats.OpenLogs++
	req.N = s.countLogRequest(id)
	fault := s.fault
	gen := s.gen
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stats.OpenLogs--
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	bw := bufio.NewWriterSize(w, 32<<10)
	flush := func() {
		_ = bw.Flush()
		if fl != nil {
			fl.Flush()
		}
	}
	written := 0
	pos := 0 // index into all entries ever written (rotated included)
	for {
		l.mu.Lock()
		start := pos - l.rotated
		if start < 0 {
			start = 0 // rotated away before this reader got to them
		}
		batch := l.entries[start:]
		pos = l.rotated + len(l.entries)
		closed, changed := l.closed, l.changed
		l.mu.Unlock()
		for _, e := range batch {
			if !req.Since.IsZero() && e.Time.Before(req.Since) {
				continue
			}
			if fault != nil {
				switch f := fault(req, written); f.Kind {
				case FaultEOF:
					flush()
					return
				case FaultReset:
					flush()
					panic(http.ErrAbortHandler)
				case FaultResetMidLine:
					line := formatEntry(e, timestamps)
					_, _ = bw.Write(line[:len(line)/2])
					flush()
					panic(http.ErrAbortHandler)
				case FaultStall:
					flush()
					select {
					case <-r.Context().Done():
					case <-gen:
					}
					return
				case FaultInject:
					_, _ = bw.WriteString(f.Text + "\n")
				}
			}
			if _, err := bw.Write(formatEntry(e, timestamps)); err != nil {
				return
			}
			written++
		}
		flush()
		if !req.Follow || closed {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-gen:
			return
		case <-changed:
		}
	}
}

func formatEntry(e Entry, timestamps bool) []byte {
	var b []byte
	if timestamps {
		b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, ' ')
	}
	b = append(b, e.Text...)
	if !e.NoNewline {
		b = append(b, '\n')
	}
	return b
}
