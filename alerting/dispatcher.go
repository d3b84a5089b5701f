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

	slack    *slackNotifier
	am       *alertmanagerNotifier
	webhooks []*webhookNotifier
	// ownClient is the HTTP client New made when Options had none; Run
	// closes its idle connections on return.
	ownClient *http.Client

	mu      sync.Mutex // guards results
	results map[string]Result
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
		logger:   opts.Logger.With("component", "alerting"),
		metrics:  m,
		redactor: &Redactor{},
		backoff:  opts.Backoff.orDefault(),
		now:      opts.Now,
		version:  opts.Version,
		results:  map[string]Result{},
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

	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		d.ownClient = client
	}
	if cfg.Slack != nil {
		if d.slack, err = newSlackNotifier(d, *cfg.Slack, client, opts.Registerer); err != nil {
			return nil, err
		}
	}
	if cfg.Alertmanager != nil {
		d.am = newAlertmanagerNotifier(d, *cfg.Alertmanager, client)
	}
	for i, w := range cfg.Webhooks {
		n, err := newWebhookNotifier(d, w, fmt.Sprintf("alerting.webhooks[%d]", i), client)
		if err != nil {
			return nil, err
		}
		d.webhooks = append(d.webhooks, n)
	}
	return d, nil
}

// Redactor returns the redactor that holds every configured credential,
// for callers that print text derived from incidents.
func (d *Dispatcher) Redactor() *Redactor { return d.redactor }

// Notify queues the events for every notifier that takes them. It does
// no network I/O; the queues are unbounded and drained by Run.
func (d *Dispatcher) Notify(events ...incident.Event) {
	for _, ev := range events {
		d.redactIncident(&ev.Incident)
		if d.slack != nil {
			d.slack.handle(ev)
		}
		if d.am != nil {
			d.am.handle(ev)
		}
		for _, w := range d.webhooks {
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
// queued; Export returns them for the checkpoint.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if d.slack != nil {
		wg.Go(func() { d.slack.run(ctx) })
	}
	if d.am != nil {
		wg.Go(func() { d.am.run(ctx) })
	}
	for _, w := range d.webhooks {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	if d.ownClient != nil {
		d.ownClient.CloseIdleConnections()
	}
	return nil
}

// Ready reports whether the Slack credential passed its last check; the
// other notifiers have no credential check and are always ready.
func (d *Dispatcher) Ready() error {
	if d.slack == nil || d.slack.client == nil {
		return nil
	}
	return d.slack.ready()
}

// Idle reports whether every queue is empty.
func (d *Dispatcher) Idle() bool {
	if d.slack != nil && !d.slack.idle() {
		return false
	}
	if d.am != nil && d.am.queue.len() > 0 {
		return false
	}
	for _, w := range d.webhooks {
		if w.queue.len() > 0 {
			return false
		}
	}
	return true
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
	var out []string
	if d.slack != nil {
		for ch := range d.slack.queues {
			out = append(out, "slack:"+ch)
		}
	}
	if d.am != nil {
		out = append(out, amLabel)
	}
	for _, w := range d.webhooks {
		out = append(out, w.label)
	}
	sortStrings(out)
	return out
}

// Preview renders the Slack messages for ev as Block Kit JSON without
// sending anything: the parent message, and for an update or resolve the
// thread reply too.
func (d *Dispatcher) Preview(ev incident.Event) ([]byte, error) {
	n := d.slack
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
}

// Export returns the state to checkpoint. Call it while Run is stopped, or
// accept that a request in flight may be delivered twice after a restart
// (webhook receivers drop it by delivery id).
func (d *Dispatcher) Export() State {
	s := State{Version: 1}
	if n := d.slack; n != nil {
		n.mu.Lock()
		s.Threads = map[string]*Thread{}
		for id, th := range n.threads {
			s.Threads[id] = th.clone()
		}
		n.mu.Unlock()
		s.SlackQueues = map[string][]slackJob{}
		for ch, q := range n.queues {
			if jobs := q.snapshot(); len(jobs) > 0 {
				s.SlackQueues[ch] = jobs
			}
		}
	}
	if a := d.am; a != nil {
		a.mu.Lock()
		for _, in := range a.open {
			s.OpenAlerts = append(s.OpenAlerts, in)
		}
		a.mu.Unlock()
		s.AlertPushes = a.queue.snapshot()
	}
	for _, w := range d.webhooks {
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
	if n := d.slack; n != nil {
		n.mu.Lock()
		for id, th := range s.Threads {
			if _, ok := n.queues[th.Channel]; !ok {
				d.logger.Warn("slack thread dropped from checkpoint: channel no longer configured", "channel", th.Channel, "thread", id)
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
				d.logger.Warn("slack jobs dropped from checkpoint: channel no longer configured", "channel", ch, "jobs", len(jobs))
				continue
			}
			for _, j := range jobs {
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
	}
	if a := d.am; a != nil {
		a.mu.Lock()
		for _, in := range s.OpenAlerts {
			a.open[in.ID] = in
		}
		a.mu.Unlock()
		for _, p := range s.AlertPushes {
			a.queue.push(p)
		}
	}
	for _, w := range d.webhooks {
		for _, dl := range s.Deliveries[w.cfg.Name] {
			w.queue.push(dl)
		}
	}
	return nil
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
