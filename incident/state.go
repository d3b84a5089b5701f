package incident

import (
	"fmt"
	"slices"
	"time"
)

// StateVersion is the version of the Snapshot format.
const StateVersion = 1

// Snapshot is the engine state that a checkpoint keeps so that a restart
// neither repeats nor loses a transition: every open or pending incident
// with its window, and the storm guard. It marshals to JSON.
type Snapshot struct {
	Version int          `json:"version"`
	Tracks  []SavedTrack `json:"tracks"`
	Fires   []StormFire  `json:"fires,omitempty"`
	Summary *SavedTrack  `json:"summary,omitempty"`
}

// SavedTrack is one incident, pending or firing, with its recent match
// times.
type SavedTrack struct {
	Incident     Incident    `json:"incident"`
	Times        []time.Time `json:"times"`
	PendingSince time.Time   `json:"pending_since,omitzero"`
	Dirty        bool        `json:"dirty,omitempty"`
}

// Export returns the state to checkpoint. Candidates that have not yet met
// their threshold are included too, so a window survives a restart.
func (e *Engine) Export() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Version: StateVersion, Fires: slices.Clone(e.fires)}
	keys := make([]Key, 0, len(e.tracks))
	for k := range e.tracks {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	for _, k := range keys {
		s.Tracks = append(s.Tracks, save(e.tracks[k]))
	}
	if e.summary != nil {
		st := save(e.summary)
		s.Summary = &st
	}
	return s
}

func save(t *track) SavedTrack {
	return SavedTrack{Incident: t.inc.clone(), Times: slices.Clone(t.times), PendingSince: t.pendingSince, Dirty: t.dirty}
}

// Import replaces the engine state with s, typically right after New on
// start. Incidents of policies that no longer exist, or that became
// count-only, are dropped and returned so the caller can report them.
// They produce no event: the notifiers restart from the same checkpoint
// and still hold their threads and alerts.
func (e *Engine) Import(s Snapshot) (dropped []Incident, err error) {
	if s.Version != StateVersion {
		return nil, fmt.Errorf("incident: checkpoint version %d is not supported (want %d): delete the incidents section of the checkpoint to start afresh", s.Version, StateVersion)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tracks = map[Key]*track{}
	for _, st := range s.Tracks {
		p := e.policy(st.Incident.Key.Policy)
		if p == nil || p.Threshold == 0 {
			dropped = append(dropped, st.Incident)
			continue
		}
		e.tracks[st.Incident.Key] = restore(st, p)
	}
	e.fires = slices.Clone(s.Fires)
	e.summary = nil
	if s.Summary != nil {
		e.summary = restore(*s.Summary, nil)
	}
	if e.openGauge != nil {
		e.openGauge.Reset()
		e.initMetrics()
		for _, t := range e.tracks {
			if t.inc.State == StateFiring {
				e.openGauge.WithLabelValues(t.inc.Key.Policy).Inc()
			}
		}
		if e.summary != nil {
			e.openGauge.WithLabelValues(StormPolicy).Inc()
		}
	}
	return dropped, nil
}

func restore(st SavedTrack, p *Policy) *track {
	in := st.Incident.clone()
	if in.Rules == nil {
		in.Rules = map[string]int{}
	}
	return &track{policy: p, inc: in, times: slices.Clone(st.Times), pendingSince: st.PendingSince, dirty: st.Dirty}
}

// Compact returns a smaller copy of s for a checkpoint that would
// otherwise be too large. The copy has no sample text and no candidates
// below their threshold. It keeps at most threshold match times per
// incident, because deciding to open needs no more. Restored incidents
// then show empty samples until their next match.
func (s Snapshot) Compact() Snapshot {
	c := Snapshot{Version: s.Version, Fires: s.Fires}
	for _, st := range s.Tracks {
		if st.Incident.State == 0 {
			continue
		}
		c.Tracks = append(c.Tracks, compactTrack(st))
	}
	if s.Summary != nil {
		st := compactTrack(*s.Summary)
		c.Summary = &st
	}
	return c
}

func compactTrack(st SavedTrack) SavedTrack {
	st.Incident.First.Text = ""
	st.Incident.Latest.Text = ""
	if n := max(st.Incident.Threshold, 1); len(st.Times) > n {
		st.Times = st.Times[len(st.Times)-n:]
	}
	return st
}
