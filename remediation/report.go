package remediation

import (
	"context"
	"time"

	"github.com/authwatch/authwatch/rules"
)

// Step is one stage of a rotation.
type Step string

// Steps in the order they run.
const (
	StepPreflight Step = "preflight"
	StepObtain    Step = "obtain"
	StepValidate  Step = "validate"
	StepBackup    Step = "backup"
	StepPatch     Step = "patch"
	StepRestart   Step = "restart"
	StepRollout   Step = "rollout"
	StepVerify    Step = "verify"
	StepDone      Step = "done"
)

// Outcome is the end state of a rotation. Its string is the result label
// of authwatch_token_rotations_total.
type Outcome string

// Outcomes.
const (
	OutcomeSucceeded   Outcome = "succeeded"
	OutcomeFailed      Outcome = "failed"
	OutcomeNotVerified Outcome = "not_verified"
	OutcomeRejected    Outcome = "rejected"
	OutcomeDryRun      Outcome = "dry_run"
	// OutcomeLeaseLost ends a rotation whose replica lost the leader
	// Lease: it writes nothing further.
	OutcomeLeaseLost Outcome = "lease_lost"
)

var allOutcomes = []Outcome{OutcomeSucceeded, OutcomeFailed, OutcomeNotVerified, OutcomeRejected, OutcomeDryRun, OutcomeLeaseLost}

// Trigger is a request for a rotation. cmd builds it from an incident transition,
// the expiry check builds it for proactive renewal, and `authwatch rotate`
// builds a manual one.
type Trigger struct {
	// Policy is the policy of the incident; empty for manual and expiry
	// triggers.
	Policy string
	// Category is the category of the incident's matches; CategoryNone
	// leaves the choice to the policy.
	Category  rules.Category
	Namespace string
	// Workload is "<Kind>/<name>" as in rules.Source.
	Workload string
	// IncidentKey is passed back in every Report so that the reporter can
	// reply in the incident's thread.
	IncidentKey string
	// Target names the target of a manual or expiry trigger; incident
	// triggers leave it empty and are matched against the targets.
	Target string
	// Manual marks a rotation run by hand.
	Manual bool
	// Renewal marks a proactive rotation ahead of the token's exp. Such
	// rotations recur by design, so the circuit breaker neither counts
	// nor checks them.
	Renewal bool
	// DryRun forces a dry run whatever the target's dry_run setting is.
	DryRun bool
	// Reason is a short phrase that explains why the rotation runs.
	Reason string
}

// StepState is the progress of a step in a report.
type StepState string

// Step states.
const (
	StateStarted StepState = "started"
	StateDone    StepState = "done"
	StateFailed  StepState = "failed"
	StateSkipped StepState = "skipped"
	StatePlanned StepState = "planned"
)

// Report is one step of a rotation, or its outcome when Final is set.
// Message never contains a token or a credential.
type Report struct {
	Target     string
	RotationID string
	Trigger    Trigger
	Step       Step
	State      StepState
	Message    string
	DryRun     bool
	Final      bool
	Outcome    Outcome
	Duration   time.Duration
	Time       time.Time
}

// Reporter sends rotation reports to people: cmd wires it to the incident's
// Slack thread, or to a new message for a manual rotation. Report must
// not block for long; errors are logged and counted.
type Reporter interface {
	Report(ctx context.Context, r Report) error
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(ctx context.Context, r Report) error

// Report implements Reporter.
func (f ReporterFunc) Report(ctx context.Context, r Report) error { return f(ctx, r) }

// LeaderChecker reports whether this replica holds the leader Lease.
// The rotator checks it before every write.
type LeaderChecker interface {
	IsLeader() bool
}
