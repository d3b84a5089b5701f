package incident

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authwatch/authwatch/rules"
)

// maxWindowTimes caps the match times kept per key, which bounds memory
// under a flood and caps Incident.InWindow.
const maxWindowTimes = 1024

// Options configures an Engine.
type Options struct {
	// Config holds the policies and the storm guard; New validates it.
	Config Config
	// Mask masks secrets in a line before it is kept as a sample; wire
	// rules.Mask here. Required, because samples leave the process in
	// alerts.
	Mask func([]byte) []byte
	// Registerer receives authwatch_incidents_open and
	// authwatch_incident_transitions_total. Nil registers nothing.
	Registerer prometheus.Registerer
}

// Engine keeps the incidents of all policies. It is safe for concurrent
// use; callers pass the current time to every method, so tests drive it
// with any clock.
type Engine struct {
	mask func([]byte) []byte

	openGauge   *prometheus.GaugeVec
	transitions *prometheus.CounterVec

	mu       sync.Mutex // guards the fields below
	policies []Policy
	storm    Storm
	tracks   map[Key]*track
	// fires lists the keys that started firing within the storm window,
	// oldest first.
	fires   []StormFire
	summary *track
}

type track struct {
	policy       *Policy
	inc          Incident
	times        []time.Time
	pendingSince time.Time
	dirty        bool
}

// StormFire records when a key started firing, for the storm guard.
type StormFire struct {
	Key  Key       `json:"key"`
	Time time.Time `json:"time"`
}

// New validates opts and returns an engine with no incidents.
func New(opts Options) (*Engine, error) {
	if opts.Mask == nil {
		return nil, errors.New("incident: Options.Mask is required")
	}
	cfg := opts.Config
	cfg.Policies = slices.Clone(cfg.Policies)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		mask:     opts.Mask,
		policies: cfg.Policies,
		storm:    cfg.Storm,
		tracks:   map[Key]*track{},
	}
	if opts.Registerer != nil {
		e.openGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_incidents_open",
			Help: "Incidents that are firing, by policy.",
		}, []string{"policy"})
		e.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_incident_transitions_total",
			Help: "Incident transitions (opened, updated, resolved), by policy.",
		}, []string{"policy", "transition"})
		if err := errors.Join(opts.Registerer.Register(e.openGauge), opts.Registerer.Register(e.transitions)); err != nil {
			return nil, fmt.Errorf("incident: register metrics: %w", err)
		}
		e.initMetrics()
	}
	return e, nil
}

func (e *Engine) initMetrics() {
	if e.openGauge == nil {
		return
	}
	names := []string{StormPolicy}
	for i := range e.policies {
		if e.policies[i].Threshold > 0 {
			names = append(names, e.policies[i].Name)
		}
	}
	for _, n := range names {
		e.openGauge.WithLabelValues(n)
		for _, t := range []Transition{Opened, Updated, Resolved} {
			e.transitions.WithLabelValues(n, t.String())
		}
	}
}

// Policies returns a copy of the policies in force.
func (e *Engine) Policies() []Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.policies)
}

// Observe counts m against every policy that selects it and returns the
// resulting Opened events (an incident that fires at once, a storm
// summary). Updates and resolves come from Tick. Windows count by now,
// the time the match is observed, not by the line's timestamp, because
// lines of different pods arrive out of order.
func (e *Engine) Observe(m *rules.Match, now time.Time) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var events []Event
	for i := range e.policies {
		p := &e.policies[i]
		if p.Threshold == 0 || !p.Selects(m) {
			continue
		}
		key := keyOf(p.Name, &m.Line.Source)
		t := e.tracks[key]
		if t == nil {
			t = &track{policy: p, inc: Incident{Key: key, Rules: map[string]int{}, StartedAt: now}}
			e.tracks[key] = t
		}
		t.add(m, now, e.mask)
		switch t.inc.State {
		case 0:
			if t.inc.InWindow < p.Threshold {
				continue
			}
			if p.For > 0 {
				t.inc.State = StatePending
				t.pendingSince = now
				continue
			}
			events = e.fire(t, now, events)
		case StatePending:
			if now.Sub(t.pendingSince) >= p.For && t.inc.InWindow >= p.Threshold {
				events = e.fire(t, now, events)
			}
		case StateFiring:
			t.dirty = true
		}
	}
	e.count(events)
	return events
}

func keyOf(policy string, src *rules.Source) Key {
	w := src.Workload
	if w == "" {
		w = "Pod/" + src.Pod
	}
	return Key{Policy: policy, Namespace: src.Namespace, Workload: w}
}

func (t *track) add(m *rules.Match, now time.Time, mask func([]byte) []byte) {
	in := &t.inc
	t.times = append(t.times, now)
	t.prune(now)
	if len(t.times) > maxWindowTimes {
		// Reslicing keeps this O(1); append reallocates, and so frees
		// the dropped head, once the capacity runs out.
		t.times = t.times[len(t.times)-maxWindowTimes:]
	}
	in.InWindow = len(t.times)

	in.Threshold = t.policy.Threshold
	in.Window = t.policy.Window
	in.Count++
	in.Rules[m.RuleID]++
	in.LastSeen = now
	in.addName(m.Line.Source.Pod, m.Line.Source.Container)
	if in.Category == "" || m.Category == rules.TokenExpired {
		in.Category = m.Category.String()
	}
	if sev, _ := rules.ParseSeverity(in.Severity); m.Severity > sev {
		in.Severity = m.Severity.String()
	}

	s := Sample{
		Time:      m.Line.Time,
		Pod:       m.Line.Source.Pod,
		Container: m.Line.Source.Container,
		RuleID:    m.RuleID,
		Category:  m.Category.String(),
		Severity:  m.Severity.String(),
		Text:      sampleText(mask, m.Line.Text),
	}
	if in.Count == 1 {
		in.First = s
	}
	in.Latest = s
}

// sampleText masks secrets, then cuts the text at MaxSampleBytes on a rune
// boundary and replaces invalid UTF-8.
func sampleText(mask func([]byte) []byte, text []byte) string {
	b := mask(slices.Clone(text))
	if len(b) > MaxSampleBytes {
		cut := MaxSampleBytes
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = append(b[:cut:cut], "…"...)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func (t *track) prune(now time.Time) {
	cutoff := now.Add(-t.policy.Window)
	i := 0
	for i < len(t.times) && !t.times[i].After(cutoff) {
		i++
	}
	t.times = t.times[i:]
	t.inc.InWindow = len(t.times)
}

// fire moves t to firing, applying the storm guard, and appends the
// events to events.
func (e *Engine) fire(t *track, now time.Time, events []Event) []Event {
	in := &t.inc
	in.State = StateFiring
	in.FiredAt = now
	in.ID = newID(in.Key, now)
	if e.storm.Workloads > 0 {
		events = e.stormCheck(t, now, events)
	}
	return append(events, Event{Transition: Opened, Incident: in.clone(), Time: now})
}

func (e *Engine) stormCheck(t *track, now time.Time, events []Event) []Event {
	e.pruneFires(now)
	e.fires = append(e.fires, StormFire{Key: t.inc.Key, Time: now})
	if e.summary == nil {
		// Counting distinct workloads is only needed until the storm
		// starts; during one, every new incident folds.
		workloads := map[[2]string]bool{}
		for _, f := range e.fires {
			workloads[[2]string{f.Key.Namespace, f.Key.Workload}] = true
		}
		if len(workloads) <= e.storm.Workloads {
			return events
		}
	}
	if e.summary == nil {
		s := &track{inc: Incident{
			Key:       Key{Policy: StormPolicy},
			State:     StateFiring,
			Rules:     map[string]int{},
			StartedAt: e.fires[0].Time,
			FiredAt:   now,
			ID:        newID(Key{Policy: StormPolicy}, now),
			Category:  t.inc.Category,
			Severity:  t.inc.Severity,
		}}
		for _, f := range e.fires {
			s.addMember(f.Key)
		}
		s.inc.First = t.inc.First
		e.summary = s
		// The summary opens before the incident that triggered it, so a
		// notifier learns the storm id first.
		events = append(events, Event{Transition: Opened, Incident: s.inc.clone(), Time: now})
	} else {
		e.summary.addMember(t.inc.Key)
		e.summary.dirty = true
	}
	s := &e.summary.inc
	s.Count += t.inc.Count
	s.LastSeen = now
	s.Latest = t.inc.Latest
	t.inc.Folded = true
	t.inc.StormID = s.ID
	return events
}

func (t *track) addMember(k Key) {
	if slices.Contains(t.inc.Members, k) {
		return
	}
	if len(t.inc.Members) >= MaxMembers {
		t.inc.MoreMembers++
		return
	}
	t.inc.Members = append(t.inc.Members, k)
}

func (e *Engine) pruneFires(now time.Time) {
	cutoff := now.Add(-e.storm.Window)
	i := 0
	for i < len(e.fires) && !e.fires[i].Time.After(cutoff) {
		i++
	}
	e.fires = slices.Delete(e.fires, 0, i)
}

// Tick advances time: pending incidents fire or lapse, firing incidents
// with new matches report Updated, quiet ones resolve, and a storm summary
// resolves when none of its folded incidents is still firing. Call it about
// once a second. Events come in key order.
func (e *Engine) Tick(now time.Time) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]Key, 0, len(e.tracks))
	for k := range e.tracks {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)

	var events []Event
	folded := 0
	for _, k := range keys {
		t := e.tracks[k]
		p := t.policy
		t.prune(now)
		switch t.inc.State {
		case 0:
			if len(t.times) == 0 {
				delete(e.tracks, k)
			}
		case StatePending:
			switch {
			case t.inc.InWindow < p.Threshold:
				delete(e.tracks, k)
			case now.Sub(t.pendingSince) >= p.For:
				events = e.fire(t, now, events)
			}
		case StateFiring:
			if now.Sub(t.inc.LastSeen) >= p.ResolveAfter {
				events = append(events, e.resolve(t, now))
				delete(e.tracks, k)
				continue
			}
			if t.dirty {
				t.dirty = false
				events = append(events, Event{Transition: Updated, Incident: t.inc.clone(), Time: now})
			}
		}
		if t.inc.Folded && t.inc.State == StateFiring {
			folded++
		}
	}

	e.pruneFires(now)
	if s := e.summary; s != nil {
		switch {
		case folded == 0:
			events = append(events, e.resolve(s, now))
			e.summary = nil
		case s.dirty:
			s.dirty = false
			events = append(events, Event{Transition: Updated, Incident: s.inc.clone(), Time: now})
		}
	}
	e.count(events)
	return events
}

func (e *Engine) resolve(t *track, now time.Time) Event {
	t.inc.State = StateResolved
	t.inc.ResolvedAt = now
	return Event{Transition: Resolved, Incident: t.inc.clone(), Time: now}
}

func compareKeys(a, b Key) int {
	return cmp.Or(cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Workload, b.Workload))
}

// Open returns snapshots of the firing incidents, storm summary included,
// in key order.
func (e *Engine) Open() []Incident {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Incident
	for _, t := range e.tracks {
		if t.inc.State == StateFiring {
			out = append(out, t.inc.clone())
		}
	}
	if e.summary != nil {
		out = append(out, e.summary.inc.clone())
	}
	slices.SortFunc(out, func(a, b Incident) int { return compareKeys(a.Key, b.Key) })
	return out
}

func (e *Engine) count(events []Event) {
	if e.openGauge == nil {
		return
	}
	for _, ev := range events {
		p := ev.Incident.Key.Policy
		e.transitions.WithLabelValues(p, ev.Transition.String()).Inc()
		switch ev.Transition {
		case Opened:
			e.openGauge.WithLabelValues(p).Inc()
		case Resolved:
			e.openGauge.WithLabelValues(p).Dec()
		}
	}
}

// Reconfigure swaps in cfg after validating it. On error the old
// configuration stays. Windows and incidents of policies that keep their
// name carry over under the new thresholds. Incidents of removed or
// count-only policies resolve, and Reconfigure returns their Resolved
// events.
func (e *Engine) Reconfigure(cfg Config, now time.Time) ([]Event, error) {
	cfg.Policies = slices.Clone(cfg.Policies)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policies = cfg.Policies
	e.storm = cfg.Storm
	keys := make([]Key, 0, len(e.tracks))
	for k := range e.tracks {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	var events []Event
	for _, k := range keys {
		t := e.tracks[k]
		p := e.policy(k.Policy)
		if p == nil || p.Threshold == 0 {
			if t.inc.State == StateFiring {
				events = append(events, e.resolve(t, now))
			}
			delete(e.tracks, k)
			continue
		}
		t.policy = p
	}
	e.initMetrics()
	e.count(events)
	return events, nil
}

func (e *Engine) policy(name string) *Policy {
	for i := range e.policies {
		if e.policies[i].Name == name {
			return &e.policies[i]
		}
	}
	return nil
}
