package incident

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Key identifies an incident: at most one incident per key is open.
// Workload is "<Kind>/<name>", or "Pod/<name>" for a pod without an owner.
type Key struct {
	Policy    string `json:"policy"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
}

// String returns "policy namespace/workload".
func (k Key) String() string { return k.Policy + " " + k.Namespace + "/" + k.Workload }

// State is where an incident is in its life.
type State uint8

// States in order. A pending incident has met its threshold and waits out
// the policy's For; it is never notified.
const (
	StatePending State = iota + 1
	StateFiring
	StateResolved
)

var stateNames = [...]string{"", "pending", "firing", "resolved"}

// String returns the name used in logs, alerts and webhooks.
func (s State) String() string {
	if int(s) < len(stateNames) && s > 0 {
		return stateNames[s]
	}
	return "unknown"
}

// Sample is one matched line kept as evidence. Text is masked by the
// engine's Mask function before it is stored.
type Sample struct {
	Time      time.Time `json:"time"`
	Pod       string    `json:"pod"`
	Container string    `json:"container"`
	RuleID    string    `json:"rule"`
	Category  string    `json:"category"`
	Severity  string    `json:"severity"`
	Text      string    `json:"text"`
}

// Incident is a snapshot of one incident. Events carry copies, so a
// consumer may keep one.
type Incident struct {
	// ID is stable for the life of the incident and differs between two
	// incidents of the same key.
	ID    string `json:"id"`
	Key   Key    `json:"key"`
	State State  `json:"state"`
	// Category and Severity are the most specific category and the
	// highest severity among the counted matches.
	Category string `json:"category"`
	Severity string `json:"severity"`
	// Rules counts matches per rule ID since the incident started.
	Rules map[string]int `json:"rules"`
	// Count is the number of matches since the incident started; InWindow
	// is the number inside the policy window at the last evaluation,
	// capped at the threshold plus MaxWindowSamples.
	Count     int           `json:"count"`
	InWindow  int           `json:"in_window"`
	Threshold int           `json:"threshold"`
	Window    time.Duration `json:"window"`
	// Pods and Containers list the first MaxNames distinct names seen;
	// MorePods counts the ones left out.
	Pods       []string  `json:"pods"`
	Containers []string  `json:"containers"`
	MorePods   int       `json:"more_pods"`
	First      Sample    `json:"first"`
	Latest     Sample    `json:"latest"`
	StartedAt  time.Time `json:"started_at"`
	FiredAt    time.Time `json:"fired_at,omitzero"`
	LastSeen   time.Time `json:"last_seen"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// Folded is set on an incident that the storm guard folded into the
	// summary incident StormID; notifiers that post one message per
	// incident skip it.
	Folded  bool   `json:"folded,omitempty"`
	StormID string `json:"storm_id,omitempty"`
	// Members lists the keys that a storm summary covers (Key.Policy is
	// StormPolicy); MoreMembers counts the ones left out past MaxMembers.
	Members     []Key `json:"members,omitempty"`
	MoreMembers int   `json:"more_members,omitempty"`
}

// Limits on what an incident keeps, so memory stays bounded under a storm.
const (
	MaxNames   = 10
	MaxMembers = 200
	// MaxSampleBytes caps the stored sample text.
	MaxSampleBytes = 2048
)

// IsStorm reports whether the incident is a storm summary.
func (in *Incident) IsStorm() bool { return in.Key.Policy == StormPolicy }

func (in *Incident) clone() Incident {
	c := *in
	c.Rules = make(map[string]int, len(in.Rules))
	for k, v := range in.Rules {
		c.Rules[k] = v
	}
	c.Pods = append([]string(nil), in.Pods...)
	c.Containers = append([]string(nil), in.Containers...)
	c.Members = append([]Key(nil), in.Members...)
	return c
}

func (in *Incident) addName(pod, container string) {
	if !contains(in.Pods, pod) {
		if len(in.Pods) < MaxNames {
			in.Pods = append(in.Pods, pod)
		} else {
			in.MorePods++
		}
	}
	if !contains(in.Containers, container) && len(in.Containers) < MaxNames {
		in.Containers = append(in.Containers, container)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func newID(k Key, t time.Time) string {
	h := sha256.New()
	h.Write([]byte(k.Policy + "\x00" + k.Namespace + "\x00" + k.Workload + "\x00"))
	h.Write(strconv.AppendInt(nil, t.UnixNano(), 10))
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Transition is a change in an incident's state, or new matches in it.
type Transition uint8

// Transitions. Opened means firing for the first time (after any pending
// time); Updated means new matches since the last event; Resolved means
// quiet for the policy's ResolveAfter, or the policy was removed.
const (
	Opened Transition = iota + 1
	Updated
	Resolved
)

var transitionNames = [...]string{"", "opened", "updated", "resolved"}

// String returns the name used in logs, metrics and webhooks.
func (t Transition) String() string {
	if int(t) < len(transitionNames) && t > 0 {
		return transitionNames[t]
	}
	return "unknown"
}

// Event reports one transition with a snapshot of the incident after it.
type Event struct {
	Transition Transition `json:"transition"`
	Incident   Incident   `json:"incident"`
	Time       time.Time  `json:"time"`
}
