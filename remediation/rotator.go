// Package remediation rotates the token behind authentication failures.
// It obtains a new token from its source and validates it, patches the
// Secret that holds it, and restarts the workloads that read it. Then it
// waits for their rollouts and verifies that the new pods stop failing.
//
// Safety comes first: dry run by default, a cooldown, a maximum per hour,
// one rotation in flight per target, a kill switch, and a circuit breaker
// for rotations that recur at a steady period. Nothing is written after a
// failure or once this replica has lost the leader Lease. State that must
// survive a restart is kept in annotations on the target Secret.
package remediation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/internal/secret"
)

// Options configures a Rotator.
type Options struct {
	// Config is the remediation section; New validates it.
	Config Config
	Client kubernetes.Interface
	// Executor runs exec sources; required when a target has one.
	Executor PodExecutor
	Reporter Reporter
	// Permissions counts and logs the requests that the API server
	// rejects with 403 Forbidden. With nil, only the step's failure
	// message reports them; it names the verb, the resource and the fix
	// in both cases.
	Permissions *permission.Reporter
	// Leader is checked before every write; nil means this process acts
	// alone, as `authwatch rotate` does.
	Leader     LeaderChecker
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Identity names this replica in the journal, for example its pod name.
	Identity string
	// PollInterval is how often rollouts and verifications are checked;
	// the default is 2s.
	PollInterval time.Duration
	// ExpiryInterval is how often Run reads the JWTs in the target
	// Secrets; the default is 1m.
	ExpiryInterval time.Duration
}

func (o *Options) validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("remediation: Options.Client is nil"))
	}
	if o.Reporter == nil {
		errs = append(errs, errors.New("remediation: Options.Reporter is nil"))
	}
	if o.Logger == nil {
		errs = append(errs, errors.New("remediation: Options.Logger is nil"))
	}
	if o.Registerer == nil {
		errs = append(errs, errors.New("remediation: Options.Registerer is nil"))
	}
	return errors.Join(errs...)
}

// Rotator runs rotations. Trigger and HandleMatch may be called from any
// goroutine; Run owns the goroutines that rotate.
type Rotator struct {
	cfg            Config
	client         kubernetes.Interface
	perm           permissions
	reporter       Reporter
	leader         LeaderChecker
	logger         *slog.Logger
	metrics        *metrics
	identity       string
	pollInterval   time.Duration
	expiryInterval time.Duration
	sources        map[string]TokenSource
	triggers       chan Trigger

	mu            sync.Mutex
	inFlight      map[string]bool            // target → rotating; guarded by mu
	lastAttempt   map[string]time.Time       // target → last automatic attempt; guarded by mu
	verifications map[*verification]struct{} // guarded by mu
}

// Result is the outcome of one rotation.
type Result struct {
	ID      string
	Target  string
	Outcome Outcome
	// Step is the step that failed or was rejected; StepDone on success.
	Step Step
	// Err is the reason the rotation did not succeed. It never contains
	// the token.
	Err      error
	DryRun   bool
	Duration time.Duration
}

// New validates the configuration and builds the token sources. It
// starts no goroutines.
func New(opts Options) (*Rotator, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}

	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.ExpiryInterval <= 0 {
		opts.ExpiryInterval = time.Minute
	}
	if opts.Identity == "" {
		opts.Identity = "authwatch"
	}

	r := &Rotator{
		cfg:            opts.Config,
		client:         opts.Client,
		perm:           permissions{reporter: opts.Permissions},
		reporter:       opts.Reporter,
		leader:         opts.Leader,
		logger:         opts.Logger.With("component", "remediation"),
		identity:       opts.Identity,
		pollInterval:   opts.PollInterval,
		expiryInterval: opts.ExpiryInterval,
		sources:        map[string]TokenSource{},
		triggers:       make(chan Trigger, 64),
		inFlight:       map[string]bool{},
		lastAttempt:    map[string]time.Time{},
		verifications:  map[*verification]struct{}{},
	}

	names := make([]string, 0, len(r.cfg.Targets))
	for i := range r.cfg.Targets {
		t := &r.cfg.Targets[i]
		names = append(names, t.Name)
		src, err := r.buildSource(t, opts.Executor)
		if err != nil {
			return nil, fmt.Errorf("remediation.targets[%d].source: %w", i, err)
		}
		r.sources[t.Name] = src
	}

	m, err := newMetrics(opts.Registerer, names)
	if err != nil {
		return nil, fmt.Errorf("remediation: register metrics: %w", err)
	}
	r.metrics = m
	return r, nil
}

func (r *Rotator) buildSource(t *Target, executor PodExecutor) (TokenSource, error) {
	switch s := t.Source; {
	case s.HTTP != nil:
		src, err := newHTTPSource(*s.HTTP, t.Secret.Namespace, r.client)
		if err != nil {
			return nil, err
		}
		src.perm = r.perm
		return src, nil
	case s.Exec != nil:
		if executor == nil {
			return nil, errors.New("exec source needs Options.Executor")
		}
		return &execSource{cfg: *s.Exec, pattern: t.pattern, client: r.client, perm: r.perm, exec: executor}, nil
	case s.Command != nil:
		return &commandSource{cfg: *s.Command}, nil
	}
	return nil, errors.New("no source configured")
}

// SetSource replaces the token source of a target. Tests use it to put a
// fake in place of a real issuer.
func (r *Rotator) SetSource(target string, src TokenSource) error {
	if _, ok := r.cfg.Target(target); !ok {
		return fmt.Errorf("remediation: unknown target %q", target)
	}
	r.sources[target] = src
	return nil
}

// Trigger queues a rotation request for Run. It never blocks: when the
// queue is full the trigger is dropped, counted and logged.
func (r *Rotator) Trigger(trig Trigger) {
	select {
	case r.triggers <- trig:
	default:
		r.metrics.dropped.Inc()
		r.logger.Error("rotation trigger dropped, queue full", "policy", trig.Policy, "namespace", trig.Namespace, "workload", trig.Workload)
	}
}

// Run resumes rotations that another replica left in flight (read-only),
// serves triggers and checks token expiry until ctx ends. Call it only
// while this replica leads.
func (r *Rotator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()

	for i := range r.cfg.Targets {
		t := &r.cfg.Targets[i]
		wg.Go(func() { r.resume(ctx, t) })
	}
	r.checkExpiry(ctx)

	tick := time.NewTicker(r.expiryInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			r.checkExpiry(ctx)
		case trig := <-r.triggers:
			for _, t := range r.targetsFor(trig) {
				if r.isInFlight(t.Name) {
					r.logger.Debug("rotation already in flight, trigger ignored", "target", t.Name, "policy", trig.Policy)
					continue
				}
				trig := trig
				trig.Target = t.Name
				wg.Go(func() { r.Rotate(ctx, trig) })
			}
		}
	}
}

func (r *Rotator) targetsFor(trig Trigger) []*Target {
	var out []*Target
	for i := range r.cfg.Targets {
		t := &r.cfg.Targets[i]
		if trig.Target == t.Name || (trig.Target == "" && t.selects(trig.Policy, trig.Category, trig.Namespace, trig.Workload)) {
			out = append(out, t)
		}
	}
	return out
}

func (r *Rotator) isInFlight(target string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight[target]
}

// staleAfter is how long a journal entry without an outcome counts as a
// rotation still in flight.
func (r *Rotator) staleAfter(t *Target) time.Duration {
	return time.Duration(len(t.Restart)+1)*t.RolloutTimeout + t.VerifyWindow + t.VolumeSyncWait + 2*time.Minute
}

// mayWrite returns an error unless this replica may write now.
// The leader check comes first because losing the Lease also cancels
// ctx in the daemon, and the outcome should name the cause.
func (r *Rotator) mayWrite(ctx context.Context) error {
	if r.leader != nil && !r.leader.IsLeader() {
		return errLeaseLost
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remediation: rotation interrupted: %w", err)
	}
	return nil
}

func newRotationID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102t150405z") + "-" + hex.EncodeToString(b[:])
}

// run is the state of one rotation.
type run struct {
	r    *Rotator
	t    *Target
	trig Trigger
	id   string
	dry  bool
	// readOnly marks a resumed rotation, which records no Events.
	readOnly bool
	start    time.Time
	object   *corev1.ObjectReference // Events go here
}

// Rotate runs one rotation of trig.Target and returns its outcome, which
// it has also reported, logged, recorded as Events and counted.
func (r *Rotator) Rotate(ctx context.Context, trig Trigger) Result {
	now := time.Now()
	t, ok := r.cfg.Target(trig.Target)
	if !ok {
		return Result{Target: trig.Target, Outcome: OutcomeRejected, Step: StepPreflight,
			Err: fmt.Errorf("remediation: unknown target %q: check remediation.targets in the config file", trig.Target)}
	}
	ru := &run{r: r, t: t, trig: trig, id: newRotationID(now), dry: t.dryRun || trig.DryRun, start: now}
	res := ru.execute(ctx)
	res.ID, res.Target, res.DryRun, res.Duration = ru.id, t.Name, ru.dry, time.Since(now)
	ru.finish(ctx, res)
	return res
}

func (ru *run) execute(ctx context.Context) Result {
	r, t := ru.r, ru.t
	if r.cfg.Disabled || t.Disabled {
		return rejected(StepPreflight, &RejectedError{Target: t.Name, Reason: ReasonKillSwitch, Detail: "rotation is disabled in the config file"})
	}

	r.mu.Lock()
	if r.inFlight[t.Name] {
		r.mu.Unlock()
		return rejected(StepPreflight, &RejectedError{Target: t.Name, Reason: ReasonInFlight, Detail: "a rotation of this target is running in this replica"})
	}
	if last, ok := r.lastAttempt[t.Name]; ok && !ru.trig.Manual && time.Since(last) < t.Cooldown {
		r.mu.Unlock()
		return rejected(StepPreflight, &RejectedError{Target: t.Name, Reason: ReasonCooldown,
			Detail: fmt.Sprintf("last attempt at %s, cooldown is %s", last.UTC().Format(time.RFC3339), t.Cooldown)})
	}
	r.inFlight[t.Name] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inFlight, t.Name)
		r.mu.Unlock()
	}()

	// Preflight: read-only checks.
	ru.report(ctx, StepPreflight, StateStarted, "rotation "+ru.why())
	plan, err := r.plan(ctx, t)
	if plan != nil {
		ru.object = ru.eventObject(ctx, plan)
	}
	if err != nil {
		return failure(StepPreflight, err)
	}
	if err := checkSafety(t, readState(plan.secret), time.Now(), ru.trig, r.staleAfter(t)); err != nil {
		return rejected(StepPreflight, err)
	}
	if !ru.trig.Manual {
		r.mu.Lock()
		r.lastAttempt[t.Name] = time.Now()
		r.mu.Unlock()
	}
	ru.report(ctx, StepPreflight, StateDone, joinLines(plan.Lines()))

	if ru.dry {
		for _, step := range []Step{StepObtain, StepValidate, StepBackup, StepPatch, StepRestart, StepRollout, StepVerify} {
			ru.report(ctx, step, StatePlanned, ru.dryRunLine(step, plan))
		}
		return Result{Outcome: OutcomeDryRun, Step: StepDone}
	}
	return ru.rotate(ctx, plan)
}

// rotate runs the writing steps. Each returns at the first failure, so
// nothing is written after it.
func (ru *run) rotate(ctx context.Context, plan *Plan) Result {
	r, t := ru.r, ru.t

	ru.report(ctx, StepObtain, StateStarted, r.sources[t.Name].Describe())
	tok, err := r.sources[t.Name].Token(ctx)
	if err != nil {
		return failure(StepObtain, err)
	}
	ru.stepDone(ctx, StepObtain, "TokenObtained", "new token obtained")

	if err := validateToken(tok, t.Format, t.MinValidity, time.Now()); err != nil {
		return failure(StepValidate, err)
	}
	if string(plan.secret.Data[t.Secret.Key]) == tok.Reveal() {
		return failure(StepValidate, fmt.Errorf("%w: the source returned the token already in the Secret", ErrInvalidToken))
	}
	ru.stepDone(ctx, StepValidate, "TokenValidated", "new token is valid")

	if err := r.mayWrite(ctx); err != nil {
		return failure(StepBackup, err)
	}
	if err := r.writeBackup(ctx, t, ru.id, plan.secret.Data[t.Secret.Key]); err != nil {
		return failure(StepBackup, err)
	}
	ru.stepDone(ctx, StepBackup, "TokenBackedUp", fmt.Sprintf("previous token kept as %s in Secret %s", t.KeepPrevious, BackupSecretName(t.Name)))

	j := journal{ID: ru.id, Holder: r.identity, Step: StepPatch, Started: ru.start, Updated: time.Now()}
	c := claim{id: ru.id, now: ru.start, journal: j, manual: ru.trig.Manual, renewal: ru.trig.Renewal}
	if _, err := r.patchToken(ctx, t, plan.secret, tok, c); err != nil {
		return failure(StepPatch, err)
	}
	ru.stepDone(ctx, StepPatch, "SecretPatched", fmt.Sprintf("Secret %s key %s patched", plan.Secret, t.Secret.Key))

	// Restart, and collect what verification needs to tell new pods.
	restartedAt := map[WorkloadRef]string{}
	restartTime := time.Now()
	for _, w := range plan.Restarts {
		if !w.Restart {
			ru.report(ctx, StepRestart, StateSkipped, w.Note)
			continue
		}
		at, err := r.restart(ctx, t.Secret.Namespace, w.Workload, restartTime)
		if err != nil {
			return failure(StepRestart, err)
		}
		restartedAt[w.Workload] = at
		ru.stepDone(ctx, StepRestart, "RolloutRestarted", w.Workload.String()+" restarted")
	}
	j.Step, j.Updated = StepRollout, time.Now()
	j.RestartedAt = restartTime.UTC().Format(time.RFC3339Nano)
	if err := r.writeJournal(ctx, t, j); err != nil {
		return failure(StepRollout, err)
	}

	return ru.rolloutAndVerify(ctx, plan, restartedAt, restartTime, &j, true)
}

// rolloutAndVerify waits for the rollouts and verifies the new pods. A
// resumed rotation calls it with write false: it then only reads.
func (ru *run) rolloutAndVerify(ctx context.Context, plan *Plan, restartedAt map[WorkloadRef]string, restartTime time.Time, j *journal, write bool) Result {
	r, t := ru.r, ru.t
	since := restartTime
	if len(restartedAt) == 0 {
		since = restartTime.Add(plan.verify)
	}
	v := r.startVerification(t, since)
	defer r.stopVerification(v)

	pods := &newPods{r: r, namespace: t.Secret.Namespace, known: map[string]bool{}}
	if len(restartedAt) > 0 {
		pods.since = restartTime
	}
	for _, w := range plan.Restarts {
		at, ok := restartedAt[w.Workload]
		if !ok {
			continue
		}
		st, err := r.waitRollout(ctx, t.Secret.Namespace, w.Workload, at, t.RolloutTimeout)
		if err != nil {
			return failure(StepRollout, err)
		}
		if st.podPrefix != "" {
			pods.prefixes = append(pods.prefixes, st.podPrefix)
		}
		ru.stepDone(ctx, StepRollout, "RolloutComplete", w.Workload.String()+" rolled out")
	}

	if write {
		j.Step, j.Updated = StepVerify, time.Now()
		if err := r.writeJournal(ctx, t, *j); err != nil {
			return failure(StepVerify, err)
		}
	}
	window := t.VerifyWindow
	if wait := time.Until(since); wait > 0 {
		window += wait
	}
	ru.report(ctx, StepVerify, StateStarted, fmt.Sprintf("watching the new pods for %s", window.Round(time.Second)))
	if err := r.verify(ctx, t, v, pods, window); err != nil {
		if ctx.Err() != nil {
			return failure(StepVerify, err)
		}
		return Result{Outcome: OutcomeNotVerified, Step: StepVerify, Err: err}
	}
	if write {
		j.Step, j.Outcome, j.Updated = StepDone, OutcomeSucceeded, time.Now()
		if err := r.writeJournal(ctx, t, *j); err != nil {
			return failure(StepDone, err)
		}
	}
	ru.stepDone(ctx, StepVerify, "RotationVerified", "new pods log no authentication failures")
	return Result{Outcome: OutcomeSucceeded, Step: StepDone}
}

func rejected(step Step, err error) Result {
	return Result{Outcome: OutcomeRejected, Step: step, Err: err}
}

func failure(step Step, err error) Result {
	if errors.Is(err, errLeaseLost) {
		return Result{Outcome: OutcomeLeaseLost, Step: step, Err: err}
	}
	var re *RejectedError
	if errors.As(err, &re) {
		return Result{Outcome: OutcomeRejected, Step: step, Err: err}
	}
	return Result{Outcome: OutcomeFailed, Step: step, Err: err}
}

func (ru *run) why() string {
	switch {
	case ru.trig.Manual:
		return "requested by hand"
	case ru.trig.Reason != "":
		return ru.trig.Reason
	}
	return fmt.Sprintf("for incident %s on %s/%s", ru.trig.Policy, ru.trig.Namespace, ru.trig.Workload)
}

func (ru *run) dryRunLine(step Step, plan *Plan) string {
	t := ru.t
	switch step {
	case StepObtain:
		return "would obtain a token: " + plan.Source
	case StepValidate:
		return "would validate the token (format " + t.Format + ")"
	case StepBackup:
		return "would keep the previous token in Secret " + BackupSecretName(t.Name)
	case StepPatch:
		return fmt.Sprintf("would patch Secret %s key %s", plan.Secret, plan.Key)
	case StepRestart:
		var notes []string
		for _, w := range plan.Restarts {
			notes = append(notes, w.Note)
		}
		if len(notes) == 0 {
			return "would restart nothing: no workload is listed"
		}
		return "would restart: " + joinLines(notes)
	case StepRollout:
		return fmt.Sprintf("would wait up to %s for each rollout", t.RolloutTimeout)
	case StepVerify:
		return fmt.Sprintf("would watch the new pods for %s", t.VerifyWindow)
	}
	return ""
}

// finish reports, logs, records and counts the outcome.
func (ru *run) finish(ctx context.Context, res Result) {
	r, t := ru.r, ru.t
	msg := string(res.Outcome)
	if res.Err != nil {
		msg = fmt.Sprintf("%s at step %s: %s", res.Outcome, res.Step, describeError(res.Err))
	}
	// A rotation may end because ctx ended (leadership lost, shutdown);
	// its outcome is still reported.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()

	r.metrics.rotations.WithLabelValues(t.Name, string(res.Outcome)).Inc()
	switch res.Outcome {
	case OutcomeSucceeded:
		r.metrics.lastSuccess.WithLabelValues(t.Name).SetToCurrentTime()
		r.metrics.circuitOpen.WithLabelValues(t.Name).Set(0)
		r.metrics.duration.WithLabelValues(t.Name).Observe(res.Duration.Seconds())
		r.logger.Info("rotation succeeded", "target", t.Name, "rotation_id", ru.id, "duration", res.Duration)
	case OutcomeFailed, OutcomeNotVerified, OutcomeLeaseLost:
		r.metrics.duration.WithLabelValues(t.Name).Observe(res.Duration.Seconds())
		r.logger.Error("rotation did not succeed", "target", t.Name, "rotation_id", ru.id, "outcome", string(res.Outcome), "step", string(res.Step), "err", res.Err)
	case OutcomeRejected:
		var re *RejectedError
		if errors.As(res.Err, &re) && re.Reason == ReasonCircuitOpen {
			r.metrics.circuitOpen.WithLabelValues(t.Name).Set(1)
		}
		r.logger.Warn("rotation rejected", "target", t.Name, "rotation_id", ru.id, "err", res.Err)
	case OutcomeDryRun:
		r.logger.Info("rotation dry run done", "target", t.Name, "rotation_id", ru.id)
	}
	if res.Outcome == OutcomeFailed || res.Outcome == OutcomeNotVerified {
		ru.event(rctx, corev1.EventTypeWarning, "RotationFailed", msg)
	}
	state := StateDone
	if res.Outcome != OutcomeSucceeded && res.Outcome != OutcomeDryRun {
		state = StateFailed
	}
	ru.send(rctx, Report{Step: res.Step, State: state, Message: msg, Final: true, Outcome: res.Outcome, Duration: res.Duration})
}

func (ru *run) stepDone(ctx context.Context, step Step, reason, msg string) {
	ru.event(ctx, corev1.EventTypeNormal, reason, msg)
	ru.report(ctx, step, StateDone, msg)
}

func (ru *run) report(ctx context.Context, step Step, state StepState, msg string) {
	ru.r.logger.Info("rotation step", "target", ru.t.Name, "rotation_id", ru.id, "step", string(step), "state", string(state), "dry_run", ru.dry)
	ru.send(ctx, Report{Step: step, State: state, Message: msg})
}

func (ru *run) send(ctx context.Context, rep Report) {
	rep.Target, rep.RotationID, rep.Trigger, rep.DryRun, rep.Time = ru.t.Name, ru.id, ru.trig, ru.dry, time.Now()
	if err := ru.r.reporter.Report(ctx, rep); err != nil {
		ru.r.metrics.reportsFailed.Inc()
		ru.r.logger.Warn("rotation report failed", "target", ru.t.Name, "rotation_id", ru.id, "step", string(rep.Step), "err", err)
	}
}

// eventObject returns the object that a rotation's Events are recorded
// on: the first workload it restarts, or the Secret.
func (ru *run) eventObject(ctx context.Context, plan *Plan) *corev1.ObjectReference {
	ns := ru.t.Secret.Namespace
	for _, w := range ru.t.Restart {
		if wl, err := ru.r.getWorkload(ctx, ns, w); err == nil {
			return &corev1.ObjectReference{Kind: w.Kind, APIVersion: "apps/v1", Namespace: ns, Name: w.Name, UID: wl.object.GetUID()}
		}
	}
	return &corev1.ObjectReference{Kind: "Secret", APIVersion: "v1", Namespace: ns, Name: ru.t.Secret.Name, UID: plan.secret.UID}
}

// event records a Kubernetes Event, unless the rotation is a dry run or
// this replica may not write.
func (ru *run) event(ctx context.Context, eventType, reason, msg string) {
	if ru.dry || ru.readOnly || ru.object == nil {
		return
	}
	if ru.r.leader != nil && !ru.r.leader.IsLeader() {
		return
	}
	now := metav1.NewTime(time.Now())
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:        ru.object.Name + "." + hex.EncodeToString(suffix[:]),
			Namespace:   ru.object.Namespace,
			Annotations: map[string]string{AnnotationRotationID: ru.id, annotationTarget: ru.t.Name},
		},
		InvolvedObject:      *ru.object,
		Reason:              reason,
		Message:             truncate(fmt.Sprintf("target %s, rotation %s: %s", ru.t.Name, ru.id, msg), 1024),
		Type:                eventType,
		Source:              corev1.EventSource{Component: "authwatch"},
		ReportingController: "authwatch.io/remediation",
		ReportingInstance:   ru.r.identity,
		Action:              "RotateToken",
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	if _, err := ru.r.client.CoreV1().Events(ru.object.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		err = ru.r.perm.check(err, permission.Create, permission.Events, ru.object.Namespace)
		ru.r.logger.Warn("rotation event not recorded", "target", ru.t.Name, "rotation_id", ru.id, "reason", reason, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// resume finds a rotation that another replica left in flight and, when
// it had restarted the workloads, verifies the rollout read-only and
// reports the outcome. It never writes.
func (r *Rotator) resume(ctx context.Context, t *Target) {
	sec, err := r.client.CoreV1().Secrets(t.Secret.Namespace).Get(ctx, t.Secret.Name, metav1.GetOptions{})
	if err != nil {
		err = r.perm.check(err, permission.Get, permission.Secrets, t.Secret.Namespace)
		r.logger.Warn("rotation state not readable", "target", t.Name, "err", err)
		return
	}
	j := readState(sec).journal
	if j == nil || j.Outcome != "" || time.Since(j.Updated) > r.staleAfter(t) {
		return
	}
	r.mu.Lock()
	if r.inFlight[t.Name] {
		r.mu.Unlock()
		return
	}
	r.inFlight[t.Name] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inFlight, t.Name)
		r.mu.Unlock()
	}()

	ru := &run{r: r, t: t, id: j.ID, start: j.Started, readOnly: true,
		trig: Trigger{Target: t.Name, Reason: "resumed after a leader change"}}
	r.logger.Info("resuming rotation left in flight, read-only", "target", t.Name, "rotation_id", j.ID, "step", string(j.Step), "holder", j.Holder)
	var res Result
	restartTime, perr := time.Parse(time.RFC3339Nano, j.RestartedAt)
	if j.RestartedAt == "" || perr != nil {
		res = Result{Outcome: OutcomeFailed, Step: j.Step, Err: fmt.Errorf(
			"remediation: rotation %s by %s stopped at step %s before restarting the workloads: check Secret %s/%s, then run authwatch rotate %s",
			j.ID, j.Holder, j.Step, t.Secret.Namespace, t.Secret.Name, t.Name)}
	} else {
		plan, err := r.plan(ctx, t)
		if err != nil {
			res = failure(StepPreflight, err)
		} else {
			restarted := map[WorkloadRef]string{}
			for _, w := range plan.Restarts {
				if w.Restart {
					restarted[w.Workload] = j.RestartedAt
				}
			}
			res = ru.rolloutAndVerify(ctx, plan, restarted, restartTime, j, false)
		}
	}
	res.ID, res.Target, res.Duration = j.ID, t.Name, time.Since(j.Started)
	ru.finish(ctx, res)
}

// checkExpiry exports the exp of each target's JWT and triggers a
// renewal once exp is less than renew_before away.
func (r *Rotator) checkExpiry(ctx context.Context) {
	for i := range r.cfg.Targets {
		t := &r.cfg.Targets[i]
		sec, err := r.client.CoreV1().Secrets(t.Secret.Namespace).Get(ctx, t.Secret.Name, metav1.GetOptions{})
		if err != nil {
			err = r.perm.check(err, permission.Get, permission.Secrets, t.Secret.Namespace)
			if ctx.Err() == nil {
				r.logger.Warn("token expiry not readable", "target", t.Name, "err", err)
			}
			continue
		}
		tok := secret.New(string(sec.Data[t.Secret.Key]))
		exp, ok, err := jwtExpiry(tok.Reveal())
		if err != nil || !ok {
			continue
		}
		r.metrics.expiry.WithLabelValues(t.Name).Set(float64(exp.Unix()))
		if t.RenewBefore > 0 && time.Until(exp) <= t.RenewBefore {
			r.Trigger(Trigger{Target: t.Name, Renewal: true, Reason: "token expires at " + exp.UTC().Format(time.RFC3339)})
		}
	}
}

// describeError keeps an error on one line for reports.
func describeError(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
