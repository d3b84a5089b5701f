package watcher

import (
	"encoding/binary"
	"hash/fnv"
	"sort"
	"time"
)

// lineID identifies a delivered line inside the replay window: its
// timestamp and a hash of its text. Lines with the same ID are
// distinguished by counting them.
type lineID struct {
	nanos int64
	hash  uint64
}

func hashText(b []byte, truncated bool) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	if truncated {
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

// resumeState is what one stream has delivered, kept so that a reopened
// stream skips exactly those lines.
//
// The kubelet returns every line whose timestamp is at or after the
// requested sinceTime (which the API truncates to the second), in file
// order. A reopen therefore requests floor(last-margin) and skips the
// first n occurrences of each line ID delivered at or after that second.
// This is exact as long as no line is written with a timestamp more than
// margin before an earlier line of the same container.
type resumeState struct {
	last time.Time // the latest timestamp delivered
	// window counts delivered lines with timestamps at or after floor
	// (the second that a reopen requests).
	window map[lineID]uint32
	floor  time.Time
	// skip counts the lines a reopened stream still has to pass over.
	skip map[lineID]uint32
	// replayed reports whether a skipped line came back since the
	// reopen; a reopen that skips nothing it expected suggests a gap.
	replayed bool
	done     bool
}

func newResumeState() *resumeState {
	return &resumeState{window: make(map[lineID]uint32)}
}

// sinceTime returns the sinceTime for a reopen, or the zero time when
// nothing was delivered yet.
func (s *resumeState) sinceTime() time.Time { return s.floor }

// startReplay prepares a reopen: the delivered lines in the window are
// expected again and will be skipped.
func (s *resumeState) startReplay() {
	s.skip = make(map[lineID]uint32, len(s.window))
	for id, n := range s.window {
		s.skip[id] = n
	}
	s.replayed = false
}

// seen reports whether the line was delivered before, and consumes one
// expected replay of it if so.
func (s *resumeState) seen(id lineID) bool {
	n, ok := s.skip[id]
	if !ok {
		return false
	}
	if n <= 1 {
		delete(s.skip, id)
	} else {
		s.skip[id] = n - 1
	}
	s.replayed = true
	return true
}

// gapSuspected reports whether the first new line after a reopen arrived
// although none of the lines expected again did: the kubelet no longer
// served them (a rotated or removed log), so lines may be missing.
func (s *resumeState) gapSuspected() bool {
	suspect := len(s.skip) > 0 && !s.replayed
	// Ask once per reopen.
	s.replayed = true
	return suspect
}

// record adds a delivered line and moves the window forward.
func (s *resumeState) record(id lineID, ts time.Time, margin time.Duration) {
	if ts.After(s.last) {
		s.last = ts
		floor := s.last.Add(-margin).Truncate(time.Second)
		if floor.After(s.floor) {
			s.floor = floor
			s.prune()
		}
	}
	if s.floor.IsZero() {
		s.floor = ts.Add(-margin).Truncate(time.Second)
	}
	if !ts.Before(s.floor) {
		s.window[id]++
	}
}

func (s *resumeState) prune() {
	limit := s.floor.UnixNano()
	for id := range s.window {
		if id.nanos < limit {
			delete(s.window, id)
		}
	}
}

// entrySize is the encoded size of one window entry.
const entrySize = 20

// encodeWindow packs the window as (nanos, hash, count) records, newest
// first, at most maxEntries of them. When the window holds more, only
// whole seconds that fit are kept, and the returned floor moves up to
// match. A restart then may miss a line written out of order across that
// floor, but never repeats one. When even the latest line's second does
// not fit, its newest maxEntries entries are kept with that second as the
// floor, so a restart repeats that second's older lines.
func (s *resumeState) encodeWindow(maxEntries int) ([]byte, time.Time) {
	ids := make([]lineID, 0, len(s.window))
	for id := range s.window {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].nanos > ids[j].nanos })
	floor := s.floor
	if len(ids) > maxEntries {
		cut := time.Unix(0, ids[maxEntries-1].nanos).Truncate(time.Second).Add(time.Second)
		if lastSecond := s.last.Truncate(time.Second); cut.After(lastSecond) {
			cut = lastSecond
		}
		if cut.After(floor) {
			floor = cut
			keep := ids[:0]
			for _, id := range ids {
				if id.nanos >= cut.UnixNano() {
					keep = append(keep, id)
				}
			}
			ids = keep
		}
		// NOTE: over budget within one second, the older lines of that
		// second are repeated after a restart; the ConfigMap size limit
		// wins over exactly-once here.
		ids = ids[:min(len(ids), maxEntries)]
	}
	out := make([]byte, 0, len(ids)*entrySize)
	for _, id := range ids {
		out = binary.BigEndian.AppendUint64(out, uint64(id.nanos))
		out = binary.BigEndian.AppendUint64(out, id.hash)
		out = binary.BigEndian.AppendUint32(out, s.window[id])
	}
	return out, floor
}

func decodeWindow(b []byte) (map[lineID]uint32, bool) {
	if len(b)%entrySize != 0 {
		return nil, false
	}
	m := make(map[lineID]uint32, len(b)/entrySize)
	for ; len(b) > 0; b = b[entrySize:] {
		id := lineID{nanos: int64(binary.BigEndian.Uint64(b)), hash: binary.BigEndian.Uint64(b[8:])}
		m[id] = binary.BigEndian.Uint32(b[16:])
	}
	return m, true
}
