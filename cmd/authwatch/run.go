package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/authwatch/authwatch/internal/checkpoint"
	"github.com/authwatch/authwatch/internal/httpserver"
	"github.com/authwatch/authwatch/rules"
	"github.com/authwatch/authwatch/watcher"
)

// runFlags are the flags of `authwatch run`. The watch flags override
// the config file's watch section when given.
type runFlags struct {
	configFile string
	kubeconfig string
	context    string

	namespaces        []string
	allNamespaces     bool
	selector          string
	fieldSelector     string
	containers        []string
	excludeContainers []string
	since             time.Duration
	qps               float32
	burst             int
	maxStreams        int
	maxStreamsPerNode int

	listenAddress      string
	logFormat          string
	logLevel           string
	checkpointName     string
	checkpointNS       string
	checkpointInterval time.Duration
	leader             leaderFlags
}

func newRunCmd() *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Follow the logs of the selected pods, match every line and serve metrics",
		Long: "run discovers pods by namespace and selectors, follows every container's log, " +
			"matches each line against the rules, and serves /metrics, /healthz and /readyz. " +
			"Flags override the config file's watch section.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), cmd, f, cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "configuration file (YAML); flags override its watch section")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, ~/.kube/config, or the in-cluster configuration")
	fl.StringVar(&f.context, "context", "", "kubeconfig context to use")
	fl.StringArrayVarP(&f.namespaces, "namespace", "n", nil, "namespace to watch (repeatable); default the context's namespace")
	fl.BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "watch pods in all namespaces")
	fl.StringVarP(&f.selector, "selector", "l", "", "label selector, for example app=api")
	fl.StringVar(&f.fieldSelector, "field-selector", "", "field selector, for example spec.nodeName=node-1")
	fl.StringArrayVar(&f.containers, "container", nil, "only containers whose whole name matches this RE2 pattern (repeatable)")
	fl.StringArrayVar(&f.excludeContainers, "exclude-container", nil, "skip containers whose whole name matches this RE2 pattern (repeatable)")
	fl.DurationVar(&f.since, "since", 0, "on start, read each container from the later of its start and now minus this (default 5m)")
	fl.Float32Var(&f.qps, "qps", 0, "API requests per second (default 20)")
	fl.IntVar(&f.burst, "burst", 0, "API request burst (default 40)")
	fl.IntVar(&f.maxStreams, "max-streams", 0, "maximum open log streams, 0 for no cap (default 200); the rest wait their turn")
	fl.IntVar(&f.maxStreamsPerNode, "max-streams-per-node", 0, "maximum open log streams per node, 0 for no cap")
	fl.StringVar(&f.listenAddress, "listen-address", ":9090", "address of the /metrics, /healthz and /readyz server")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.checkpointName, "checkpoint-configmap", "authwatch-checkpoint", "ConfigMap that keeps resume points across restarts; empty disables checkpoints")
	fl.StringVar(&f.checkpointNS, "checkpoint-namespace", "", "namespace of the checkpoint ConfigMap; default $POD_NAMESPACE or the context's namespace")
	fl.DurationVar(&f.checkpointInterval, "checkpoint-interval", 10*time.Second, "minimum time between checkpoint writes")
	f.leader.register(fl)
	return cmd
}

// applyFlags overrides cfg with the watch flags that were given.
func (f *runFlags) applyFlags(cmd *cobra.Command, cfg *watcher.Config) {
	set := cmd.Flags().Changed
	if set("kubeconfig") {
		cfg.Kubeconfig = f.kubeconfig
	}
	if set("context") {
		cfg.Context = f.context
	}
	// A namespace flag replaces the file's choice of namespaces whole:
	// -n clears all_namespaces and -A clears namespaces.
	if set("namespace") {
		cfg.Namespaces = f.namespaces
		cfg.AllNamespaces = false
	}
	if set("all-namespaces") {
		cfg.AllNamespaces = f.allNamespaces
		if f.allNamespaces {
			cfg.Namespaces = nil
		}
	}
	if set("selector") {
		cfg.Selector = f.selector
	}
	if set("field-selector") {
		cfg.FieldSelector = f.fieldSelector
	}
	if set("container") {
		cfg.Containers = f.containers
	}
	if set("exclude-container") {
		cfg.ExcludeContainers = f.excludeContainers
	}
	if set("since") {
		cfg.Since = watcher.Duration(f.since)
	}
	if set("qps") {
		cfg.QPS = f.qps
	}
	if set("burst") {
		cfg.Burst = f.burst
	}
	if set("max-streams") {
		cfg.MaxStreams = f.maxStreams
	}
	if set("max-streams-per-node") {
		cfg.MaxStreamsPerNode = f.maxStreamsPerNode
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: use text or json", format)
}

// kubeConfig builds the REST configuration from the kubeconfig (or the
// in-cluster configuration) and returns the context's namespace.
func kubeConfig(f *runFlags, cfg *watcher.Config) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	// A flag wins over the file, also for commands that do not call
	// applyFlags.
	rules.ExplicitPath = cmp.Or(f.kubeconfig, cfg.Kubeconfig)
	overrides := &clientcmd.ConfigOverrides{CurrentContext: cmp.Or(f.context, cfg.Context)}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client configuration: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client namespace: %w", err)
	}
	rc.QPS = cfg.QPS
	rc.Burst = cfg.Burst
	// Log streams stay open for hours: no overall request timeout.
	rc.Timeout = 0
	rc.UserAgent = "authwatch/" + version
	return rc, ns, nil
}

// compileRules reads the rule packs named in cfg and compiles them.
func compileRules(cfg rules.Config) (*rules.Matcher, error) {
	opts := rules.Options{Disable: cfg.Disable}
	for _, path := range cfg.Files {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("rules.files: %w", err)
		}
		opts.Packs = append(opts.Packs, rules.PackFile{Name: path, Data: data})
	}
	return rules.Compile(opts)
}

// daemonMetrics are the metrics that cmd owns.
type daemonMetrics struct {
	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge
}

func newRegistry() (*prometheus.Registry, *daemonMetrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "authwatch_build_info",
		Help: "Always 1; the labels name the authwatch version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	m := &daemonMetrics{
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authwatch_config_last_reload_successful",
			Help: "1 when the last configuration load or reload succeeded, 0 when it failed.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authwatch_config_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful configuration load or reload.",
		}),
	}
	reg.MustRegister(info, m.reloadOK, m.reloadTime)
	return reg, m
}

func runDaemon(ctx context.Context, cmd *cobra.Command, f *runFlags, stderr io.Writer) error {
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	routeKlog(log)
	cfg, err := loadConfig(f.configFile)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if err := f.validate(cmd); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	f.applyFlags(cmd, &cfg.Watch)
	if err := cfg.Watch.Validate("watch"); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("invalid flags: %w", err)}
	}
	matcher, err := compileRules(cfg.Rules)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	rc, contextNS, err := kubeConfig(f, &cfg.Watch)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	reg, dm := newRegistry()
	dm.reloadOK.Set(1)
	dm.reloadTime.SetToCurrentTime()
	pipe, err := newPipeline(reg, matcher)
	if err != nil {
		return err
	}
	// Consumers of matches plug in here, one line each (incident engine,
	// alerting, remediation verification): pipe.addSink(x).
	stage, err := newIncidentStage(log, reg, cfg)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	pipe.addSink(stage)
	elector, err := f.leader.newElector(log, reg, client, contextNS)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	rot, err := newRotator(rotatorOptions{log: log, reg: reg, cfg: cfg.Remediation, client: client, rest: rc,
		reporter: daemonReporter(stage, logReporter{log: log}, cfg.Remediation), leader: leaderChecker(elector), identity: identity()})
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if rot != nil {
		pipe.addSink(rot)
		stage.subscribe(rotationTriggers(rot))
	}

	var store *checkpoint.Store
	if f.checkpointName != "" {
		ns := f.checkpointNS
		if ns == "" {
			ns = os.Getenv("POD_NAMESPACE")
		}
		if ns == "" {
			ns = contextNS
		}
		store, err = checkpoint.New(checkpoint.Options{
			Logger: log, Registerer: reg, Client: client,
			Namespace: ns, Name: f.checkpointName, Interval: f.checkpointInterval,
		})
		if err != nil {
			return err
		}
	}

	// The watcher is built by lead, from the checkpoint read when this
	// replica starts leading (see takeOver); a standby has none.
	ready := &readiness{elector: elector, stage: stage.ready}
	srv, err := httpserver.New(httpserver.Options{
		Logger: log, Gatherer: reg, Addr: f.listenAddress, Ready: ready.check,
	})
	if err != nil {
		return err
	}

	log.Info("authwatch starting", "version", version, "config", f.configFile)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			cancel()
		}
	}
	wg.Go(func() { fail(srv.Run(ctx)) })
	configChanged := make(chan struct{}, 1)
	if f.configFile != "" {
		cw := &configFileWatcher{log: log, path: f.configFile, interval: configPollInterval}
		wg.Go(func() { cw.Run(ctx, configChanged) })
	}
	wg.Go(func() { reloadConfig(ctx, log, f.configFile, pipe, stage, dm, configChanged) })

	// With --leader-election-lease only the leader runs lead: it streams,
	// notifies and rotates, and a standby takes over from the checkpoint.
	lead := func(ctx context.Context) error {
		saved, err := retryWhileUnreachable(ctx, log, apiCheckHint(f), func(ctx context.Context) ([]byte, error) {
			return takeOver(ctx, store, stage)
		})
		if err != nil || ctx.Err() != nil {
			return err
		}
		// lead runs once per process: losing the leadership ends it.
		w, err := watcher.New(watcher.Options{
			Logger: log, Registerer: reg, Client: client, Handler: pipe,
			Config: cfg.Watch, DefaultNamespace: contextNS, Checkpoint: saved,
		})
		if err != nil {
			return err
		}
		if store != nil {
			store.Register(checkpointWatchSection, w.MarshalCheckpoint)
			store.SetCut(func(take func()) {
				resume := w.Pause()
				defer resume()
				pipe.drain()
				take()
			})
			stage.onDelivered((&deliveredFlusher{log: log, store: store}).flush)
		}
		ready.watcher.Store(w)
		var inner sync.WaitGroup
		sinkDone := make(chan struct{})
		go func() { defer close(sinkDone); pipe.dispatch() }()
		if store != nil {
			inner.Go(func() { fail(store.Run(ctx)) })
		}
		inner.Go(func() { fail(stage.Run(ctx)) })
		if rot != nil {
			inner.Go(func() { fail(rot.Run(ctx)) })
		}
		err = w.Run(ctx)
		inner.Wait()
		// Every stream has stopped: drain the matches, then record the
		// resume points, so that a restart neither repeats nor skips.
		pipe.close()
		<-sinkDone
		if store != nil {
			flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancelFlush()
			if ferr := store.Flush(flushCtx); ferr != nil {
				log.Error("final checkpoint write failed; a restart will repeat lines", "err", ferr)
			} else {
				log.Info("checkpoint written")
			}
		}
		return err
	}
	fail(runLeading(ctx, elector, lead))
	cancel()
	wg.Wait()
	log.Info("authwatch stopped")
	if err := errors.Join(errs...); err != nil {
		return &exitError{code: 1, err: err}
	}
	return nil
}

// deliveredFlushGap is the shortest time between two checkpoint writes
// after notifications: at most 10 writes a second however many
// notifications go out.
const deliveredFlushGap = 100 * time.Millisecond

// deliveredFlusher writes the checkpoint after a notification went out,
// so that a restart does not send it again. The notifier's queue waits
// for the write, so a burst of notifications slows to deliveredFlushGap
// each rather than raising the write rate. A failed write is retried by
// the periodic one.
type deliveredFlusher struct {
	log   *slog.Logger
	store *checkpoint.Store

	mu   sync.Mutex
	last time.Time // guarded by mu
}

func (f *deliveredFlusher) flush(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if wait := deliveredFlushGap - time.Since(f.last); wait > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	f.last = time.Now()
	if err := f.store.Flush(ctx); err != nil && ctx.Err() == nil {
		f.log.Warn("checkpoint write after a notification failed; a restart may send it again", "err", err)
	}
}

// checkpointWatchSection is the checkpoint ConfigMap key of the resume
// points.
const checkpointWatchSection = "watch"

// matchSink consumes matches. HandleMatch is called from one goroutine,
// in match order for each container; the match, including Line.Text, is
// the sink's to keep. A sink that does I/O queues the work instead of
// blocking, because a blocked sink holds up every stream.
type matchSink interface {
	HandleMatch(m *rules.Match)
}

// pipeline matches each line from the watcher, counts lines and
// matches, and hands matches to the sinks through a bounded queue.
type pipeline struct {
	matcher atomic.Pointer[rules.Matcher]
	matches *prometheus.CounterVec
	lag     prometheus.Histogram
	scratch sync.Pool // of *[]rules.Match

	sinks  []matchSink       // set before the watcher starts
	queue  chan *rules.Match // closed by close after the watcher stopped
	closed atomic.Bool
	// pending counts the matches queued and not yet handled by every
	// sink; drain waits for it to reach zero.
	pending atomic.Int64
}

func newPipeline(reg prometheus.Registerer, m *rules.Matcher) (*pipeline, error) {
	p := &pipeline{
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_matches_total",
			Help: "Lines matched, by rule, category, namespace and workload.",
		}, []string{"rule", "category", "namespace", "workload"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "authwatch_line_match_lag_seconds",
			Help:    "Time from a line's runtime timestamp until it was matched and counted.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		queue: make(chan *rules.Match, 1024),
	}
	p.matcher.Store(m)
	p.scratch.New = func() any { s := make([]rules.Match, 0, 4); return &s }
	for _, c := range []prometheus.Collector{p.matches, p.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	return p, nil
}

func (p *pipeline) addSink(s matchSink) { p.sinks = append(p.sinks, s) }

// HandleLine implements watcher.Handler.
func (p *pipeline) HandleLine(line *rules.Line) {
	buf := p.scratch.Get().(*[]rules.Match)
	ms := p.matcher.Load().Match(line, (*buf)[:0])
	for i := range ms {
		m := ms[i]
		p.matches.WithLabelValues(m.RuleID, m.Category.String(), line.Source.Namespace, line.Source.Workload).Inc()
		if len(p.sinks) > 0 {
			m.Line.Text = bytes.Clone(m.Line.Text)
			p.pending.Add(1)
			// Blocks when the sinks fall behind, which slows the streams.
			p.queue <- &m
		}
	}
	clear(ms)
	*buf = ms[:0]
	p.scratch.Put(buf)
	p.lag.Observe(max(time.Since(line.Time), 0).Seconds())
}

// dispatch hands queued matches to the sinks until close.
func (p *pipeline) dispatch() {
	for m := range p.queue {
		for _, s := range p.sinks {
			s.HandleMatch(m)
		}
		p.pending.Add(-1)
	}
}

// drain waits until the sinks handled every queued match. The caller
// keeps new matches out (watcher.Pause), so the wait is bounded by the
// queue: at most 1,024 matches. After close, nothing is left to wait
// for once dispatch ended.
func (p *pipeline) drain() {
	for p.pending.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
}

// close ends dispatch once the queue is drained; call it after the
// watcher stopped.
func (p *pipeline) close() {
	if p.closed.CompareAndSwap(false, true) {
		close(p.queue)
	}
}
