package remediation

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Annotations on the target Secret. They keep the rotation state in the
// cluster, so that a restarted or newly elected authwatch neither rotates
// again nor loses track of a rotation in flight.
const (
	// AnnotationRotation set to "disabled" is the kill switch of a target.
	AnnotationRotation = "authwatch.io/rotation"
	// AnnotationLastRotation is the RFC 3339 start time of the last
	// rotation that wrote the Secret.
	AnnotationLastRotation = "authwatch.io/last-rotation"
	// AnnotationRotationID is the id of the last rotation.
	AnnotationRotationID = "authwatch.io/rotation-id"
	// AnnotationRotationsLastHour lists the RFC 3339 start times of the
	// rotations in the hour before the last one, comma-separated.
	AnnotationRotationsLastHour = "authwatch.io/rotations-last-hour"
	// AnnotationHistory lists the start times of the last rotations, for
	// the circuit breaker.
	AnnotationHistory = "authwatch.io/rotation-history"
	// AnnotationJournal is a JSON record of the last rotation's progress.
	AnnotationJournal = "authwatch.io/rotation-journal"
)

// historyLength is how many rotation times AnnotationHistory keeps.
const historyLength = 10

// journal is the step record kept in AnnotationJournal. Outcome is empty
// while the rotation is in flight, and stays empty when it stopped at a
// failure, because nothing is written after a failure.
type journal struct {
	ID          string    `json:"id"`
	Holder      string    `json:"holder"`
	Step        Step      `json:"step"`
	Outcome     Outcome   `json:"outcome,omitempty"`
	Started     time.Time `json:"started"`
	Updated     time.Time `json:"updated"`
	RestartedAt string    `json:"restarted_at,omitempty"`
}

// targetState is the rotation state read from the target Secret.
type targetState struct {
	disabled     bool
	lastRotation time.Time
	rotationID   string
	lastHour     []time.Time
	history      []time.Time
	journal      *journal
}

func readState(s *corev1.Secret) targetState {
	a := s.Annotations
	st := targetState{
		disabled:   strings.EqualFold(strings.TrimSpace(a[AnnotationRotation]), "disabled"),
		rotationID: a[AnnotationRotationID],
		lastHour:   parseTimes(a[AnnotationRotationsLastHour]),
		history:    parseTimes(a[AnnotationHistory]),
	}
	st.lastRotation, _ = time.Parse(time.RFC3339, a[AnnotationLastRotation])
	if raw := a[AnnotationJournal]; raw != "" {
		var j journal
		if json.Unmarshal([]byte(raw), &j) == nil {
			st.journal = &j
		}
	}
	return st
}

func parseTimes(s string) []time.Time {
	var out []time.Time
	for _, f := range strings.Split(s, ",") {
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(f)); err == nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func formatTimes(ts []time.Time) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.UTC().Format(time.RFC3339)
	}
	return strings.Join(parts, ",")
}

// inHour returns the times within the hour before now.
func inHour(ts []time.Time, now time.Time) []time.Time {
	var out []time.Time
	for _, t := range ts {
		if now.Sub(t) < time.Hour {
			out = append(out, t)
		}
	}
	return out
}

// RejectedError is the reason a safety check stopped a rotation before
// it wrote anything. Reason is a short constant for metrics and tests.
type RejectedError struct {
	Target string
	Reason string
	Detail string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("remediation: target %s: rotation rejected (%s): %s", e.Target, e.Reason, e.Detail)
}

// Rejection reasons.
const (
	ReasonKillSwitch  = "kill_switch"
	ReasonCooldown    = "cooldown"
	ReasonRateLimit   = "rate_limit"
	ReasonInFlight    = "in_flight"
	ReasonUnfinished  = "unfinished"
	ReasonCircuitOpen = "circuit_open"
	ReasonOwned       = "owned"
	ReasonPaused      = "paused"
)

// checkSafety applies the cluster-stored safety state. Renewals skip only
// the circuit breaker. Manual rotations
// skip the cooldown, the unfinished-rotation block and the circuit
// breaker, because an operator requested them. The kill switch and the
// hourly maximum still apply.
func checkSafety(t *Target, st targetState, now time.Time, trig Trigger, stale time.Duration) error {
	reject := func(reason, format string, args ...any) error {
		return &RejectedError{Target: t.Name, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if st.disabled {
		return reject(ReasonKillSwitch, "the Secret has annotation %s: disabled; remove it to allow rotation", AnnotationRotation)
	}
	if j := st.journal; j != nil && j.Outcome == "" && now.Sub(j.Updated) < stale {
		return reject(ReasonInFlight, "rotation %s by %s is at step %s since %s", j.ID, j.Holder, j.Step, j.Updated.UTC().Format(time.RFC3339))
	}
	if n := len(inHour(st.lastHour, now)); n >= t.MaxPerHour {
		return reject(ReasonRateLimit, "%d rotations in the last hour, max_per_hour is %d", n, t.MaxPerHour)
	}
	if trig.Manual {
		return nil
	}
	if j := st.journal; j != nil && j.Outcome == "" {
		return reject(ReasonUnfinished, "rotation %s stopped at step %s without an outcome; check it, then run authwatch rotate %s", j.ID, j.Step, t.Name)
	}
	if j := st.journal; j != nil && j.Outcome != OutcomeSucceeded {
		return reject(ReasonUnfinished, "rotation %s ended %s; a failed rotation is not retried automatically: run authwatch rotate %s", j.ID, j.Outcome, t.Name)
	}
	if !st.lastRotation.IsZero() && now.Sub(st.lastRotation) < t.Cooldown {
		return reject(ReasonCooldown, "last rotation at %s, cooldown is %s", st.lastRotation.UTC().Format(time.RFC3339), t.Cooldown)
	}
	if trig.Renewal {
		return nil
	}
	if period, ok := periodic(st.history, now, t.CircuitBreaker); ok {
		return reject(ReasonCircuitOpen,
			"rotations recur every %s; the token lifetime is the cause: use a refresh flow or a long-lived service token, then run authwatch rotate %s",
			period.Round(time.Second), t.Name)
	}
	return nil
}

// periodic reports whether the intervals between the last rotations, and
// from the last one to now, hold PeriodicRepeats similar intervals in a
// row, and returns their mean.
func periodic(history []time.Time, now time.Time, cb CircuitBreaker) (time.Duration, bool) {
	n := cb.PeriodicRepeats
	if n <= 0 {
		return 0, false
	}
	check := func(ts []time.Time) (time.Duration, bool) {
		if len(ts) < n+1 {
			return 0, false
		}
		ts = ts[len(ts)-n-1:]
		var sum time.Duration
		for i := 1; i < len(ts); i++ {
			d := ts[i].Sub(ts[i-1])
			if d <= 0 || d > cb.MaxPeriod {
				return 0, false
			}
			sum += d
		}
		mean := sum / time.Duration(n)
		limit := time.Duration(float64(mean) * cb.Tolerance)
		for i := 1; i < len(ts); i++ {
			if d := ts[i].Sub(ts[i-1]) - mean; d > limit || -d > limit {
				return 0, false
			}
		}
		return mean, true
	}
	if mean, ok := check(history); ok {
		return mean, true
	}
	return check(append(slices.Clone(history), now))
}
