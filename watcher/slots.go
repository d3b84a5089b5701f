package watcher

import (
	"container/list"
	"context"
	"sync"
)

// slots caps open streams globally and per node. Waiters are served in
// arrival order, skipping a waiter whose node is at its cap so that one
// busy node cannot block the others.
type slots struct {
	max, perNode int

	mu      sync.Mutex
	inUse   int            // guarded by mu
	byNode  map[string]int // guarded by mu
	waiters list.List      // of *slotWaiter, guarded by mu
}

type slotWaiter struct {
	node  string
	ready chan struct{} // closed when the slot is granted
}

func newSlots(max, perNode int) *slots {
	return &slots{max: max, perNode: perNode, byNode: make(map[string]int)}
}

func (s *slots) free(node string) bool {
	return (s.max == 0 || s.inUse < s.max) && (s.perNode == 0 || s.byNode[node] < s.perNode)
}

// acquire blocks until a slot on node is granted or ctx ends. queued is
// called once if the caller has to wait.
func (s *slots) acquire(ctx context.Context, node string, queued func()) error {
	s.mu.Lock()
	if s.waiters.Len() == 0 && s.free(node) {
		s.take(node)
		s.mu.Unlock()
		return nil
	}
	w := &slotWaiter{node: node, ready: make(chan struct{})}
	e := s.waiters.PushBack(w)
	s.grantLocked()
	s.mu.Unlock()
	if queued != nil {
		select {
		case <-w.ready:
			return nil
		default:
			queued()
		}
	}
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-w.ready:
			// Granted while cancelling: hand the slot on.
			s.releaseLocked(node)
		default:
			s.waiters.Remove(e)
		}
		return ctx.Err()
	}
}

func (s *slots) take(node string) {
	s.inUse++
	s.byNode[node]++
}

func (s *slots) release(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(node)
}

func (s *slots) releaseLocked(node string) {
	s.inUse--
	if s.byNode[node]--; s.byNode[node] <= 0 {
		delete(s.byNode, node)
	}
	s.grantLocked()
}

func (s *slots) grantLocked() {
	for e := s.waiters.Front(); e != nil; {
		next := e.Next()
		w := e.Value.(*slotWaiter)
		if s.max != 0 && s.inUse >= s.max {
			return
		}
		if s.free(w.node) {
			s.take(w.node)
			s.waiters.Remove(e)
			close(w.ready)
		}
		e = next
	}
}

// contended reports whether releasing a slot held on node would let a
// waiter in.
func (s *slots) contended(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for e := s.waiters.Front(); e != nil; e = e.Next() {
		w := e.Value.(*slotWaiter)
		if w.node == node {
			return true
		}
		if s.perNode == 0 || s.byNode[w.node] < s.perNode {
			return true
		}
	}
	return false
}

// waiting returns the number of queued waiters.
func (s *slots) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters.Len()
}
