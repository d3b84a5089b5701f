package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/leader"
	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/remediation"
	"github.com/authwatch/authwatch/rules"
	"github.com/authwatch/authwatch/watcher"
)

func newRotateCmd() *cobra.Command {
	var (
		f      runFlags
		dryRun bool
		plan   bool
	)
	cmd := &cobra.Command{
		Use:   "rotate TARGET",
		Short: "Rotate the token of a remediation target by hand, printing each step",
		Long: "rotate runs the same steps and safety checks as an automatic rotation: obtain, validate, " +
			"back up, patch the Secret, restart, wait for the rollout and verify. A manual rotation skips " +
			"the cooldown and the circuit breaker; the kill switch and the hourly maximum still apply. " +
			"--plan prints what a rotation would do and writes nothing.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rotate(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &f, args[0], dryRun, plan)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "configuration file (YAML) with the remediation section")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, ~/.kube/config, or the in-cluster configuration")
	fl.StringVar(&f.context, "context", "", "kubeconfig context to use")
	fl.StringVar(&f.logLevel, "log-level", "warn", "log level of the diagnostics on standard error: debug, info, warn or error")
	fl.BoolVar(&dryRun, "dry-run", false, "report every step and write nothing, whatever the target's dry_run says")
	fl.BoolVar(&plan, "plan", false, "print what a rotation would do, and whether it would run now, then exit")
	return cmd
}

func rotate(ctx context.Context, stdout, stderr io.Writer, f *runFlags, target string, dryRun, plan bool) error {
	log, err := newLogger(stderr, "text", f.logLevel)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	routeKlog(log)
	if f.configFile == "" {
		return &exitError{code: exitUsage, err: errors.New("missing --config: rotation targets come from the remediation section of the config file")}
	}
	cfg, err := loadConfig(f.configFile)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if _, ok := cfg.Remediation.Target(target); !ok {
		return &exitError{code: exitUsage, err: fmt.Errorf("unknown target %q: the config file defines %s", target, targetNames(cfg.Remediation))}
	}
	rc, _, err := kubeConfig(f, &cfg.Watch)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	var reporter remediation.Reporter = &printReporter{w: stdout}
	waitNotes := func() error { return nil }
	if !plan {
		// A manual rotation also reports in a Slack message of its own.
		var notes noteSender
		notes, waitNotes, err = startManualNotes(ctx, log, cfg)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		if notes != nil {
			reporter = reporters{reporter, noteReporter{notes: notes, cfg: cfg.Remediation}}
		}
	}
	perm, err := newRotationPermissions(log, prometheus.NewRegistry(), cfg.Remediation)
	if err != nil {
		return &exitError{code: exitUsage, err: errors.Join(err, waitNotes())}
	}
	rot, err := newRotator(rotatorOptions{
		log: log, reg: prometheus.NewRegistry(), cfg: cfg.Remediation, client: client, rest: rc,
		reporter: reporter, perm: perm, identity: identity() + "-manual",
	})
	if err != nil {
		return &exitError{code: exitUsage, err: errors.Join(err, waitNotes())}
	}

	if plan {
		p, err := rot.Plan(ctx, target)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		for _, line := range p.Lines() {
			if _, err := fmt.Fprintln(stdout, line); err != nil {
				return err
			}
		}
		return nil
	}
	// The daemon feeds verification from its log streams; by hand, a
	// watcher of the restarted workloads does.
	stopWatch := func() {}
	if t, _ := cfg.Remediation.Target(target); !dryRun && !t.IsDryRun() {
		stopWatch, err = watchRestarted(ctx, log, client, perm, cfg, target, rot)
		if err != nil {
			return &exitError{code: 1, err: errors.Join(err, waitNotes())}
		}
	}
	res := rot.Rotate(ctx, remediation.Trigger{Target: target, Manual: true, DryRun: dryRun})
	stopWatch()
	notesErr := waitNotes()
	switch res.Outcome {
	case remediation.OutcomeSucceeded, remediation.OutcomeDryRun:
		if notesErr != nil {
			// The rotation itself succeeded: warn, and keep exit code 0.
			log.Warn("rotation report to slack incomplete", "err", notesErr)
		}
		return nil
	}
	return &exitError{code: 1, err: errors.Join(fmt.Errorf("rotation %s of %s: %s at step %s", res.ID, target, res.Outcome, res.Step), notesErr)}
}

func targetNames(c remediation.Config) string {
	if len(c.Targets) == 0 {
		return "no targets"
	}
	s := ""
	for i, t := range c.Targets {
		if i > 0 {
			s += ", "
		}
		s += t.Name
	}
	return s
}

// rotatorOptions is the rotator configuration that the daemon and the
// rotate command share.
type rotatorOptions struct {
	log      *slog.Logger
	reg      prometheus.Registerer
	cfg      remediation.Config
	client   kubernetes.Interface
	rest     *rest.Config
	reporter remediation.Reporter
	// perm reports 403 responses; nil makes newRotator build its own.
	perm     *permission.Reporter
	leader   remediation.LeaderChecker
	identity string
}

// newRotator builds the rotator; it returns nil, nil when no target is
// configured, so the daemon runs without remediation.
func newRotator(o rotatorOptions) (*remediation.Rotator, error) {
	if len(o.cfg.Targets) == 0 {
		return nil, nil
	}
	perm := o.perm
	if perm == nil {
		var err error
		if perm, err = newRotationPermissions(o.log, o.reg, o.cfg); err != nil {
			return nil, err
		}
	}
	return remediation.New(remediation.Options{
		Config:      o.cfg,
		Client:      o.client,
		Permissions: perm,
		Executor:    &remediation.RESTExecutor{Config: o.rest, Client: o.client},
		Reporter:    o.reporter,
		Leader:      o.leader,
		Logger:      o.log,
		Registerer:  o.reg,
		Identity:    o.identity,
	})
}

// newRotationPermissions builds the Reporter of the API requests that
// rotation makes.
func newRotationPermissions(log *slog.Logger, reg prometheus.Registerer, cfg remediation.Config) (*permission.Reporter, error) {
	return permission.New(permission.Options{Logger: log.With("component", "remediation"), Registerer: reg, Accesses: remediation.Accesses(cfg)})
}

// printReporter writes each step of a manual rotation on its own line.
type printReporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printReporter) Report(_ context.Context, r remediation.Report) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := ""
	if r.DryRun {
		prefix = "[dry run] "
	}
	if r.Final {
		_, err := fmt.Fprintf(p.w, "%srotation %s of %s: %s (%s)\n", prefix, r.RotationID, r.Target, r.Message, r.Duration.Round(time.Millisecond))
		return err
	}
	_, err := fmt.Fprintf(p.w, "%s%-9s %-8s %s\n", prefix, r.Step, r.State, r.Message)
	return err
}

// logReporter records the rotation reports of the daemon in its log;
// daemonReporter adds Slack.
type logReporter struct{ log *slog.Logger }

func (l logReporter) Report(_ context.Context, r remediation.Report) error {
	l.log.Info("rotation report", "target", r.Target, "rotation_id", r.RotationID, "step", string(r.Step),
		"state", string(r.State), "final", r.Final, "outcome", string(r.Outcome), "dry_run", r.DryRun,
		"incident", r.Trigger.IncidentKey, "message", r.Message)
	return nil
}

// rotationTriggers turns incident openings into rotation triggers.
// Updates and resolutions never trigger: the failures of the old pods
// during a rollout update the open incident and must not start another
// rotation.
func rotationTriggers(rot *remediation.Rotator) func([]incident.Event) {
	return func(events []incident.Event) {
		for _, ev := range events {
			in := ev.Incident
			if ev.Transition != incident.Opened || in.IsStorm() {
				continue
			}
			category, _ := rules.ParseCategory(in.Category)
			rot.Trigger(remediation.Trigger{
				Policy:      in.Key.Policy,
				Category:    category,
				Namespace:   in.Key.Namespace,
				Workload:    in.Key.Workload,
				IncidentKey: in.ID,
			})
		}
	}
}

// identity names this replica in the leader Lease and the rotation
// journal: $POD_NAME in a cluster, else the host name and the process id,
// so that two processes on one host never share an identity.
func identity() string {
	if name := os.Getenv("POD_NAME"); name != "" {
		return name
	}
	host, err := os.Hostname()
	if err != nil {
		host = "authwatch"
	}
	return host + "_" + strconv.Itoa(os.Getpid())
}

// leaderFlags configure leader election in `authwatch run`.
type leaderFlags struct {
	lease         string
	namespace     string
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
}

func (lf *leaderFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&lf.lease, "leader-election-lease", "", "coordination.k8s.io Lease that elects the one replica that streams, notifies and rotates; empty: this replica always leads")
	fl.StringVar(&lf.namespace, "leader-election-namespace", "", "namespace of the Lease; default $POD_NAMESPACE or the context's namespace")
	fl.DurationVar(&lf.leaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a standby waits before taking over an unrenewed Lease")
	fl.DurationVar(&lf.renewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leading")
	fl.DurationVar(&lf.retryPeriod, "leader-election-retry-period", 2*time.Second, "time between attempts to acquire or renew the Lease")
}

// newElector returns nil when leader election is off.
func (lf *leaderFlags) newElector(log *slog.Logger, reg prometheus.Registerer, client kubernetes.Interface, contextNS string) (*leader.Elector, error) {
	if lf.lease == "" {
		return nil, nil
	}
	ns := lf.namespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		ns = contextNS
	}
	return leader.New(leader.Options{
		Client: client, Namespace: ns, Name: lf.lease, Identity: identity(),
		LeaseDuration: lf.leaseDuration, RenewDeadline: lf.renewDeadline, RetryPeriod: lf.retryPeriod,
		Logger: log, Registerer: reg,
	})
}

// errLeadershipLost ends the daemon when it stops leading, so that the
// restarted process campaigns again as a standby and resumes from the
// checkpoint with fresh state.
var errLeadershipLost = errors.New("leadership lost; exiting so that a fresh process campaigns again")

// runLeading runs lead while this replica leads, or at once without an
// elector.
func runLeading(ctx context.Context, el *leader.Elector, lead func(ctx context.Context) error) error {
	if el == nil {
		return lead(ctx)
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lost atomic.Bool
	err := el.Run(ectx, func(lctx context.Context) error {
		err := lead(lctx)
		// An error returned while the Lease is still held is the pipeline's
		// own failure (a permission error, say) and is reported as such;
		// only a lead cut short by the elector means the Lease was lost.
		if ctx.Err() == nil && (err == nil || lctx.Err() != nil) {
			lost.Store(true)
		}
		cancel()
		return err
	})
	if lost.Load() {
		return errors.Join(errLeadershipLost, err)
	}
	return err
}

// leaderChecker adapts an optional elector to remediation.LeaderChecker.
func leaderChecker(el *leader.Elector) remediation.LeaderChecker {
	if el == nil {
		return nil
	}
	return el
}

// watchRestarted follows the logs of the target's workloads and passes
// every match to the rotator, so that a manual rotation verifies the new
// pods as the daemon does. The returned function stops the watchers and
// waits for them.
func watchRestarted(ctx context.Context, log *slog.Logger, client kubernetes.Interface, perm *permission.Reporter, cfg config, target string, rot *remediation.Rotator) (func(), error) {
	t, _ := cfg.Remediation.Target(target)
	matcher, err := compileRules(cfg.Rules)
	if err != nil {
		return nil, err
	}
	handler := watcher.HandlerFunc(func(line *rules.Line) {
		for _, m := range matcher.Match(line, nil) {
			rot.HandleMatch(&m)
		}
	})

	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop := func() {
		cancel()
		wg.Wait()
	}
	for _, ref := range t.Restart {
		selector, err := workloadSelector(ctx, client, perm, t.Secret.Namespace, ref)
		if err != nil {
			stop()
			return nil, err
		}
		wc := watcher.DefaultConfig()
		wc.Namespaces = []string{t.Secret.Namespace}
		wc.Selector = selector
		wc.Since = watcher.Duration(time.Second)
		w, err := watcher.New(watcher.Options{
			Logger: log, Registerer: prometheus.NewRegistry(), Client: client, Handler: handler, Config: wc,
		})
		if err != nil {
			stop()
			return nil, err
		}
		wg.Go(func() {
			if err := w.Run(wctx); err != nil && wctx.Err() == nil {
				log.Warn("log watcher for verification stopped", "workload", ref.String(), "err", err)
			}
		})
	}
	return stop, nil
}

// workloadSelector returns the label selector of a workload's pods.
func workloadSelector(ctx context.Context, client kubernetes.Interface, perm *permission.Reporter, namespace string, ref remediation.WorkloadRef) (string, error) {
	var sel *metav1.LabelSelector
	var err error
	apps := client.AppsV1()
	switch ref.Kind {
	case "Deployment":
		var d *appsv1.Deployment
		if d, err = apps.Deployments(namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	case "StatefulSet":
		var s *appsv1.StatefulSet
		if s, err = apps.StatefulSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			sel = s.Spec.Selector
		}
	case "DaemonSet":
		var d *appsv1.DaemonSet
		if d, err = apps.DaemonSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	}
	if err != nil {
		err = remediation.CheckForbidden(perm, err, permission.Access{Verb: permission.Get, Resource: remediation.WorkloadResource(ref.Kind)}, namespace)
		return "", fmt.Errorf("read %s in %s: %w", ref, namespace, err)
	}
	if sel == nil {
		return "", fmt.Errorf("%s in %s has no pod selector", ref, namespace)
	}
	return metav1.FormatLabelSelector(sel), nil
}

// checkRotationPolicies reports the `on` entries of remediation targets
// that name no policy of the file, which would never trigger.
func checkRotationPolicies(c *config) error {
	known := map[string]bool{}
	for _, p := range c.Policies {
		known[p.Name] = true
	}
	var errs []error
	for i, t := range c.Remediation.Targets {
		for j, name := range t.On {
			if !known[name] {
				errs = append(errs, fmt.Errorf("remediation.targets[%d].on[%d]: unknown policy %q: name one of the policies section, or define it there", i, j, name))
			}
		}
	}
	return errors.Join(errs...)
}
