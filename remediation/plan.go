package remediation

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/internal/permission"
)

// Plan is the list of actions that a rotation of one target would take,
// read from the cluster without writing.
type Plan struct {
	Target string
	// Secret is "<namespace>/<name>" and Key the key that holds the token.
	Secret string
	Key    string
	Source string
	DryRun bool
	// Restarts lists the workloads and how each reads the key.
	Restarts []PlannedRestart
	// Expiry is the exp of the JWT now in the Secret; zero when the value
	// is not a JWT or has no exp.
	Expiry time.Time
	// LastRotation and RotationsLastHour come from the Secret's
	// annotations.
	LastRotation      time.Time
	RotationsLastHour int
	// Rejection is the reason a rotation would not run now, or nil.
	Rejection error

	secret *corev1.Secret
	verify time.Duration // extra wait before verification
}

// PlannedRestart is one workload of a plan.
type PlannedRestart struct {
	Workload    WorkloadRef
	Consumption Consumption
	Restart     bool
	Paused      bool
	Note        string
}

// Lines returns the plan as lines for a terminal or a report.
func (p *Plan) Lines() []string {
	lines := []string{
		fmt.Sprintf("target %s: token in Secret %s key %s", p.Target, p.Secret, p.Key),
		"obtain: " + p.Source,
		"validate: non-empty, no whitespace; a JWT must have a future exp",
		fmt.Sprintf("backup: previous value in Secret %s", BackupSecretName(p.Target)),
		fmt.Sprintf("patch: Secret %s key %s with its resourceVersion, retrying on conflict", p.Secret, p.Key),
	}
	for _, w := range p.Restarts {
		lines = append(lines, "restart: "+w.Note)
	}
	if !p.Expiry.IsZero() {
		lines = append(lines, "current token expires at "+p.Expiry.UTC().Format(time.RFC3339))
	}
	if !p.LastRotation.IsZero() {
		lines = append(lines, fmt.Sprintf("last rotation at %s, %d in the last hour",
			p.LastRotation.UTC().Format(time.RFC3339), p.RotationsLastHour))
	}
	if p.Rejection != nil {
		lines = append(lines, "would not run now: "+p.Rejection.Error())
	}
	if p.DryRun {
		lines = append(lines, "dry run: nothing is written")
	}
	return lines
}

// Plan reads the cluster and returns what a rotation of the target would
// do and whether it would run now. It writes nothing.
func (r *Rotator) Plan(ctx context.Context, target string) (*Plan, error) {
	t, ok := r.cfg.Target(target)
	if !ok {
		return nil, fmt.Errorf("remediation: unknown target %q: check remediation.targets in the config file", target)
	}
	p, err := r.plan(ctx, t)
	if err != nil {
		return nil, err
	}
	p.Rejection = checkSafety(t, readState(p.secret), time.Now(), Trigger{Manual: true}, r.staleAfter(t))
	if r.cfg.Disabled || t.Disabled {
		p.Rejection = &RejectedError{Target: t.Name, Reason: ReasonKillSwitch, Detail: "rotation is disabled in the config file"}
	}
	return p, nil
}

// plan runs the read-only preflight: the Secret exists, holds the key and
// belongs to no syncing controller, and every workload exists and is not
// paused.
func (r *Rotator) plan(ctx context.Context, t *Target) (*Plan, error) {
	sec, err := r.client.CoreV1().Secrets(t.Secret.Namespace).Get(ctx, t.Secret.Name, metav1.GetOptions{})
	if err != nil {
		err = r.perm.check(err, permission.Get, permission.Secrets, t.Secret.Namespace)
		return nil, fmt.Errorf("remediation: read Secret %s/%s: %w", t.Secret.Namespace, t.Secret.Name, err)
	}
	if owner := foreignOwner(sec); owner != "" {
		return nil, &RejectedError{Target: t.Name, Reason: ReasonOwned, Detail: fmt.Sprintf(
			"Secret %s/%s is managed by %s, which would revert a rotation: rotate the token at that source instead",
			t.Secret.Namespace, t.Secret.Name, owner)}
	}
	st := readState(sec)
	p := &Plan{
		Target:            t.Name,
		Secret:            t.Secret.Namespace + "/" + t.Secret.Name,
		Key:               t.Secret.Key,
		Source:            r.sources[t.Name].Describe(),
		DryRun:            t.dryRun,
		LastRotation:      st.lastRotation,
		RotationsLastHour: len(inHour(st.lastHour, time.Now())),
		secret:            sec,
	}
	if exp, ok, err := jwtExpiry(string(sec.Data[t.Secret.Key])); err == nil && ok {
		p.Expiry = exp
	}

	var errs []error
	for _, ref := range t.Restart {
		w, err := r.getWorkload(ctx, t.Secret.Namespace, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := consumption(&w.template.Spec, t.Secret.Name, t.Secret.Key)
		pr := PlannedRestart{
			Workload:    ref,
			Consumption: c,
			Restart:     c != ConsumedVolume || t.RestartVolumeMounts,
			Paused:      w.paused,
			Note:        describeConsumption(ref, c, t.RestartVolumeMounts),
		}
		if c == ConsumedVolume && !pr.Restart {
			p.verify = t.VolumeSyncWait
		}
		if w.paused {
			errs = append(errs, &RejectedError{Target: t.Name, Reason: ReasonPaused, Detail: fmt.Sprintf(
				"Deployment %s/%s is paused: resume it (kubectl rollout resume) or remove it from restart", t.Secret.Namespace, ref.Name)})
			pr.Note = ref.String() + " is paused: not restarted"
		}
		p.Restarts = append(p.Restarts, pr)
	}
	return p, errors.Join(errs...)
}
