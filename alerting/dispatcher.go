package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authwatch/authwatch/incident"
)

// Options configures a Dispatcher.
type Options struct {
	// Config is the alerting section; New validates it and reads the
	// secrets it names.
	Config     Config
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// HTTPClient makes every request; nil uses a client with no global
	// state. Each request also has its own timeout.
	HTTPClient *http.Client
	// Version goes into the User-Agent header.
	Version string
	// Backoff bounds retry waits; zero values mean 1s to 1m.
	Backoff Backoff
	// Now returns the current time; nil uses time.Now.
	Now func() time.Time
	// SlackTimeout bounds one Slack request; zero means 15s.
	SlackTimeout time.Duration
	// Delivered, if set, is called after each request that a Slack,
	// webhook or Alertmanager queue finished (sent, or given up), once
	// the state that Export returns includes it, and before the queue's
	// next request. A checkpoint written in Delivered means a restart
	// repeats at most the one request per queue in flight at the time.
	Delivered func(ctx context.Context)
}

// Dispatcher fans incident events out to the configured notifiers, each
// with its own queue, so a slow Slack never delays a webhook.
type Dispatcher struct {
	logger   *slog.Logger
	metrics  *metrics
	redactor *Redactor
	backoff  Backoff
	now      func() time.Time
	// requestTimeout bounds one Slack request.
	requestTimeout time.Duration
	version        string
	once           logOnce

	registerer prometheus.Registerer
	httpClient *http.Client // from Options, or nil
	delivered  func(ctx context.Context)

	// setMu guards set. Notify holds it for reading while it queues, so
	// a reload that exports the old queues misses no event.
	setMu sync.RWMutex
	set   *notifierSet
	// wake signals Run that Reconfigure left a pending set. Run stops the
	// old workers before installing it.
	wake chan struct{}

	mu      sync.Mutex // guards results, running and pending
	results map[string]Result
	running bool
	pending *swapRequest
}

// notifierSet is one configuration's notifiers.
type notifierSet struct {
	slack    *slackNotifier
	am       *alertmanagerNotifier
	webhooks []*webhookNotifier
	// ownClient is the HTTP client built when Options had none; its idle
	// connections close when the set stops.
	ownClient *http.Client
}

// swapRequest is a set waiting for Run to install it; done is closed
// once it is installed, or superseded by a later request.
type swapRequest struct {
	set  *notifierSet
	done chan struct{}
}

// Result is the outcome of the last delivery on one channel.
type Result struct {
	Sent, Failed int
	LastErr      error
}

// New validates opts, reads the credentials and returns a dispatcher that
// queues events until Run starts delivering them.
func New(opts Options) (*Dispatcher, error) {
	var missing []string
	if opts.Logger == nil {
		missing = append(missing, "Logger")
	}
	if opts.Registerer == nil {
		missing = append(missing, "Registerer")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("alerting: Options.%v required", missing)
	}

	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		logger:     opts.Logger.With("component", "alerting"),
		metrics:    m,
		redactor:   &Redactor{},
		backoff:    opts.Backoff.orDefault(),
		now:        opts.Now,
		version:    opts.Version,
		registerer: opts.Registerer,
		httpClient: opts.HTTPClient,
		delivered:  opts.Delivered,
		wake:       make(chan struct{}, 1),
		results:    map[string]Result{},
	}

	if d.now == nil {
		d.now = time.Now
	}
	d.requestTimeout = opts.SlackTimeout
	if d.requestTimeout <= 0 {
		d.requestTimeout = 15 * time.Second
	}
	if d.version == "" {
		d.version = "dev"
	}

	if d.set, err = d.build(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// build creates the notifiers of a validated cfg, reading its secrets.
func (d *Dispatcher) build(cfg Config) (*notifierSet, error) {
	set := &notifierSet{}
	client := d.httpClient
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		set.ownClient = client
	}
	var err error
	if cfg.Slack != nil {
		if set.slack, err = newSlackNotifier(d, *cfg.Slack, client, d.registerer); err != nil {
			return nil, err
		}
	}
	if cfg.Alertmanager != nil {
		set.am = newAlertmanagerNotifier(d, *cfg.Alertmanager, client)
	}
	for i, w := range cfg.Webhooks {
		n, err := newWebhookNotifier(d, w, fmt.Sprintf("alerting.webhooks[%d]", i), client)
		if err != nil {
			return nil, err
		}
		set.webhooks = append(set.webhooks, n)
	}
	return set, nil
}

// current returns the notifiers in force.
func (d *Dispatcher) current() *notifierSet {
	d.setMu.RLock()
	defer d.setMu.RUnlock()
	return d.set
}

// Redactor returns the redactor that holds every configured credential,
// for callers that print text derived from incidents.
func (d *Dispatcher) Redactor() *Redactor { return d.redactor }

// Notify queues the events for every notifier that takes them. It does
// no network I/O; the queues are unbounded and drained by Run.
func (d *Dispatcher) Notify(events ...incident.Event) {
	d.setMu.RLock()
	defer d.setMu.RUnlock()
	set := d.set
	for _, ev := range events {
		d.redactIncident(&ev.Incident)
		if set.slack != nil {
			set.slack.handle(ev)
		}
		if set.am != nil {
			set.am.handle(ev)
		}
		for _, w := range set.webhooks {
			w.handle(ev)
		}
	}
}

// redactIncident masks secrets in the sample lines of an incident before
// any notifier renders them. The event is a copy, so the engine keeps its
// own.
func (d *Dispatcher) redactIncident(in *incident.Incident) {
	in.First.Text = d.redactor.String(in.First.Text)
	in.Latest.Text = d.redactor.String(in.Latest.Text)
}

// Run delivers queued events until ctx ends. Undelivered events stay
// queued; Export returns them for the checkpoint. A Reconfigure while Run
// runs stops the old notifiers, moves their queues and threads to the new
// ones and starts those.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	d.running = true
	d.mu.Unlock()
	for {
		set := d.current()
		setCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		set.run(setCtx, &wg)
		select {
		case <-ctx.Done():
		case <-d.wake:
		}
		stop()
		wg.Wait()
		d.mu.Lock()
		req := d.pending
		d.pending = nil
		if ctx.Err() != nil {
			d.running = false
		}
		d.mu.Unlock()
		if req != nil {
			// Installed even at shutdown, so that Export returns the new
			// set's view and the Reconfigure call returns.
			d.install(req.set)
			close(req.done)
		}
		set.close()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (s *notifierSet) run(ctx context.Context, wg *sync.WaitGroup) {
	if s.slack != nil {
		wg.Go(func() { s.slack.run(ctx) })
	}
	if s.am != nil {
		wg.Go(func() { s.am.run(ctx) })
	}
	for _, w := range s.webhooks {
		wg.Go(func() { w.run(ctx) })
	}
}

func (s *notifierSet) close() {
	if s.ownClient != nil {
		s.ownClient.CloseIdleConnections()
	}
}

// Reconfigure validates cfg, reads its secrets and swaps in its
// notifiers. Slack threads, open alerts and queued requests move over
// wherever the new configuration still has their channel or webhook. The
// rest are dropped, logged and counted. On error the running notifiers
// stay. While Run runs, the
// swap first stops the old notifiers: a request in flight is cancelled
// and stays queued, so it may go out twice if the receiver had already
// taken it.
func (d *Dispatcher) Reconfigure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	set, err := d.build(cfg)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if !d.running {
		d.mu.Unlock()
		d.install(set)
		return nil
	}
	req := &swapRequest{set: set, done: make(chan struct{})}
	if d.pending != nil {
		close(d.pending.done) // superseded by this one
	}
	d.pending = req
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default: // Run has a wake-up pending already
	}
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
		// Run installs the set when it next looks; the caller stops
		// waiting.
		return ctx.Err()
	}
}

// install moves the state of the current notifiers into set and makes it
// current. The old notifiers must not be running.
func (d *Dispatcher) install(set *notifierSet) {
	d.setMu.Lock()
	defer d.setMu.Unlock()
	old := d.set
	st := old.export()
	for _, label := range old.channels() {
		d.metrics.queue.WithLabelValues(label).Set(0)
	}
	d.set = set
	set.importState(d, st)
}

// Ready reports whether the Slack credential passed its last check; the
// other notifiers have no credential check and are always ready.
func (d *Dispatcher) Ready() error {
	set := d.current()
	if set.slack == nil || set.slack.client == nil {
		return nil
	}
	return set.slack.ready()
}

// Idle reports whether every queue is empty.
func (d *Dispatcher) Idle() bool {
	set := d.current()
	if set.slack != nil && !set.slack.idle() {
		return false
	}
	if set.am != nil && set.am.queue.len() > 0 {
		return false
	}
	for _, w := range set.webhooks {
		if w.queue.len() > 0 {
			return false
		}
	}
	return true
}

// finished calls Options.Delivered after a queue finished a request.
func (d *Dispatcher) finished(ctx context.Context) {
	if d.delivered != nil {
		d.delivered(ctx)
	}
}

func (d *Dispatcher) record(channel string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.results[channel]
	if err == nil {
		r.Sent++
	} else {
		r.Failed++
		r.LastErr = err
	}
	d.results[channel] = r
}

// Results returns the delivery outcomes per channel since New.
func (d *Dispatcher) Results() map[string]Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]Result, len(d.results))
	for k, v := range d.results {
		out[k] = v
	}
	return out
}

// Channels returns the metric channel names of the configured notifiers.
func (d *Dispatcher) Channels() []string {
	return d.current().channels()
}

func (s *notifierSet) channels() []string {
	var out []string
	if s.slack != nil {
		for ch := range s.slack.queues {
			out = append(out, "slack:"+ch)
		}
	}
	if s.am != nil {
		out = append(out, amLabel)
	}
	for _, w := range s.webhooks {
		out = append(out, w.label)
	}
	sortStrings(out)
	return out
}

// Preview renders the Slack messages for ev as Block Kit JSON without
// sending anything: the parent message, and for an update or resolve the
// thread reply too.
func (d *Dispatcher) Preview(ev incident.Event) ([]byte, error) {
	n := d.current().slack
	if n == nil {
		n = &slackNotifier{d: d, cfg: SlackConfig{}, logger: d.logger, redactor: d.redactor, once: &d.once}
	}
	return n.preview(ev)
}

// Preview renders the Slack messages for ev under cfg as Block Kit JSON.
// Unlike Dispatcher.Preview it reads no credentials, so it works on a
// machine without the Slack token.
func Preview(cfg Config, logger *slog.Logger, ev incident.Event) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{logger: logger, redactor: &Redactor{}}
	n := &slackNotifier{d: d, logger: logger, redactor: d.redactor, once: &d.once}
	if cfg.Slack != nil {
		n.cfg = *cfg.Slack
	}
	return n.preview(ev)
}

func (n *slackNotifier) preview(ev incident.Event) ([]byte, error) {
	d := n.d
	in := ev.Incident
	d.redactIncident(&in)
	th := &Thread{ID: in.ID, Incidents: map[string]incident.Incident{in.ID: in}, Order: []string{in.ID}, Replied: map[string]int{in.ID: 1}}
	var msgs []message
	switch ev.Transition {
	case incident.Opened:
		msgs = append(msgs, n.threadMessage(th, false))
	case incident.Updated:
		msgs = append(msgs, n.threadMessage(th, false), n.updateMessage(th))
	case incident.Resolved:
		msgs = append(msgs, n.threadMessage(th, true), n.resolvedReply(&in))
	default:
		return nil, errors.New("alerting: preview needs an opened, updated or resolved event")
	}
	type out struct {
		Text   string `json:"text"`
		Blocks []any  `json:"blocks"`
	}
	var res []out
	for _, m := range msgs {
		o := out{Text: m.Text}
		for _, b := range m.Blocks {
			o.Blocks = append(o.Blocks, b)
		}
		res = append(res, o)
	}
	return json.MarshalIndent(res, "", "  ")
}

// State is the alerting part of the checkpoint: the Slack threads, so
// that replies and resolves land in the same thread after a restart, and
// every queued, undelivered request.
type State struct {
	Version     int                   `json:"version"`
	Threads     map[string]*Thread    `json:"threads,omitempty"`
	SlackQueues map[string][]slackJob `json:"slack_queues,omitempty"`
	OpenAlerts  []incident.Incident   `json:"open_alerts,omitempty"`
	AlertPushes []amPush              `json:"alert_pushes,omitempty"`
	Deliveries  map[string][]delivery `json:"deliveries,omitempty"`
	// Notes are the Slack notes not yet sent, and NoteThreads the
	// messages that later notes of a group reply to.
	Notes       map[string]*noteBatch  `json:"notes,omitempty"`
	NoteThreads map[string]*noteThread `json:"note_threads,omitempty"`
}

// Export returns the state to checkpoint. Call it while Run is stopped, or
// accept that a request in flight may be delivered twice after a restart
// (webhook receivers drop it by delivery id).
func (d *Dispatcher) Export() State {
	d.setMu.RLock()
	defer d.setMu.RUnlock()
	return d.set.export()
}

func (set *notifierSet) export() State {
	s := State{Version: 1}
	if n := set.slack; n != nil {
		n.mu.Lock()
		s.Threads = map[string]*Thread{}
		for id, th := range n.threads {
			s.Threads[id] = th.clone()
		}
		s.Notes, s.NoteThreads = n.exportNotes()
		n.mu.Unlock()
		s.SlackQueues = map[string][]slackJob{}
		for ch, q := range n.queues {
			if jobs := q.snapshot(); len(jobs) > 0 {
				s.SlackQueues[ch] = jobs
			}
		}
	}
	if a := set.am; a != nil {
		a.mu.Lock()
		for _, in := range a.open {
			s.OpenAlerts = append(s.OpenAlerts, in)
		}
		a.mu.Unlock()
		s.AlertPushes = a.queue.snapshot()
	}
	for _, w := range set.webhooks {
		if q := w.queue.snapshot(); len(q) > 0 {
			if s.Deliveries == nil {
				s.Deliveries = map[string][]delivery{}
			}
			s.Deliveries[w.cfg.Name] = q
		}
	}
	return s
}

// Import restores s before Run. Threads and queued requests for channels
// or webhooks that are no longer configured are dropped and logged.
func (d *Dispatcher) Import(s State) error {
	if s.Version != 1 {
		return fmt.Errorf("alerting: checkpoint version %d is not supported (want 1): delete the alerting section of the checkpoint to start afresh", s.Version)
	}
	d.setMu.Lock()
	defer d.setMu.Unlock()
	d.set.importState(d, s)
	return nil
}

// importState adds s to the notifiers of set. Threads and requests whose
// channel or webhook set lacks are dropped and logged.
func (set *notifierSet) importState(d *Dispatcher, s State) {
	if n := set.slack; n != nil {
		n.mu.Lock()
		for id, th := range s.Threads {
			if _, ok := n.queues[th.Channel]; !ok {
				d.logger.Warn("slack thread dropped: channel no longer configured", "channel", th.Channel, "thread", id)
				continue
			}
			th.ReplyQueued = false
			if th.Replied == nil {
				th.Replied = map[string]int{}
			}
			n.threads[id] = th
			if !th.Closing {
				n.groups[th.Group] = id
			}
			for inID := range th.Incidents {
				n.byIncident[inID] = id
			}
		}
		n.mu.Unlock()
		for ch, jobs := range s.SlackQueues {
			q, ok := n.queues[ch]
			if !ok {
				d.logger.Warn("slack jobs dropped: channel no longer configured", "channel", ch, "jobs", len(jobs))
				d.countDropped("slack:"+ch, len(jobs))
				continue
			}
			for _, j := range jobs {
				if j.Kind == jobNote {
					// importNotes queues a job for each batch.
					continue
				}
				if j.Kind == jobReply {
					// The update timer queues the reply again from the
					// thread's dirty flag.
					n.mu.Lock()
					if th := n.threads[j.Thread]; th != nil {
						th.Dirty = true
					}
					n.mu.Unlock()
					continue
				}
				q.push(j)
			}
		}
		n.importNotes(s.Notes, s.NoteThreads)
	}
	if a := set.am; a != nil {
		a.mu.Lock()
		for _, in := range s.OpenAlerts {
			a.open[in.ID] = in
		}
		a.mu.Unlock()
		for _, p := range s.AlertPushes {
			a.queue.push(p)
		}
	}
	for _, w := range set.webhooks {
		for _, dl := range s.Deliveries[w.cfg.Name] {
			w.queue.push(dl)
		}
	}
	logDropped(d, set, s)
}

// logDropped logs the queued requests of s that set has no notifier for.
func logDropped(d *Dispatcher, set *notifierSet, s State) {
	if set.slack == nil && (len(s.Threads) > 0 || len(s.SlackQueues) > 0 || len(s.Notes) > 0) {
		d.logger.Warn("slack state dropped: slack is no longer configured", "threads", len(s.Threads), "note_batches", len(s.Notes))
		for ch, jobs := range s.SlackQueues {
			d.countDropped("slack:"+ch, len(jobs))
		}
	}
	if set.am == nil && len(s.AlertPushes)+len(s.OpenAlerts) > 0 {
		d.logger.Warn("alertmanager state dropped: alertmanager is no longer configured", "open_alerts", len(s.OpenAlerts), "queued_pushes", len(s.AlertPushes))
		d.countDropped(amLabel, len(s.AlertPushes))
	}
	for name, q := range s.Deliveries {
		found := false
		for _, w := range set.webhooks {
			found = found || w.cfg.Name == name
		}
		if !found {
			d.logger.Warn("webhook deliveries dropped: webhook no longer configured", "webhook", name, "deliveries", len(q))
			d.countDropped("webhook:"+name, len(q))
		}
	}
}

// countDropped counts n queued requests that no notifier will send as
// failed, with reason not_configured.
func (d *Dispatcher) countDropped(channel string, n int) {
	if n == 0 {
		return
	}
	d.metrics.notifications.WithLabelValues(channel, "failed").Add(float64(n))
	d.metrics.failures.WithLabelValues(channel, "not_configured").Add(float64(n))
}

// SampleEvent returns an event for a made-up incident in namespace
// "authwatch-test", for `authwatch alert test` and previews. Its sample
// lines carry a fake bearer token so a preview shows the masking.
func SampleEvent(t incident.Transition, now time.Time) incident.Event {
	in := incident.Incident{
		ID:         "test-" + now.UTC().Format("20060102T150405"),
		Key:        incident.Key{Policy: "token-expired", Namespace: "authwatch-test", Workload: "Deployment/example-api"},
		State:      incident.StateFiring,
		Category:   "token_expired",
		Severity:   "error",
		Rules:      map[string]int{"jwt-expired": 7, "http-401": 3},
		Count:      10,
		InWindow:   4,
		Threshold:  1,
		Window:     time.Minute,
		Pods:       []string{"example-api-7d9c5-x2kqp", "example-api-7d9c5-m8z4t"},
		Containers: []string{"api"},
		First: incident.Sample{Time: now.Add(-3 * time.Minute), Pod: "example-api-7d9c5-x2kqp", Container: "api", RuleID: "jwt-expired",
			Category: "token_expired", Severity: "error", Text: `upstream call failed: 401 {"detail":"Token is expired"} Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjB9.c2lnbmF0dXJl`},
		Latest: incident.Sample{Time: now.Add(-10 * time.Second), Pod: "example-api-7d9c5-m8z4t", Container: "api", RuleID: "http-401",
			Category: "auth_failure", Severity: "error", Text: "GET https://api.example/v1/orders -> 401 Unauthorized"},
		StartedAt: now.Add(-3 * time.Minute),
		FiredAt:   now.Add(-3 * time.Minute),
		LastSeen:  now.Add(-10 * time.Second),
	}
	if t == incident.Resolved {
		in.State = incident.StateResolved
		in.ResolvedAt = now
	}
	return incident.Event{Transition: t, Incident: in, Time: now}
}

// Compact returns a smaller copy of s for a checkpoint that would
// otherwise be too large: the incident snapshots in threads and open
// alerts lose their sample text. Threads, queued requests and webhook
// bodies stay whole, because dropping them would lose or repeat
// notifications.
func (s State) Compact() State {
	c := s
	c.Threads = make(map[string]*Thread, len(s.Threads))
	for id, th := range s.Threads {
		th = th.clone()
		for inID, in := range th.Incidents {
			in.First.Text, in.Latest.Text = "", ""
			th.Incidents[inID] = in
		}
		c.Threads[id] = th
	}
	c.OpenAlerts = make([]incident.Incident, len(s.OpenAlerts))
	for i, in := range s.OpenAlerts {
		in.First.Text, in.Latest.Text = "", ""
		c.OpenAlerts[i] = in
	}
	return c
}
