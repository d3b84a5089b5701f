package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slack-go/slack"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/secret"
)

// errSlackTimeout is the cause of a Slack request that ran out of time.
var errSlackTimeout = errors.New("slack request timed out")

type slackJobKind uint8

const (
	jobParent slackJobKind = iota + 1
	jobReply
	jobJoin
	jobResolveReply
	jobResolveEdit
	// jobNote sends the note batch that Thread names (see Note).
	jobNote
)

// slackJob is one Slack request to make. The content is rendered from the
// thread's latest snapshots when the job runs, so a late job carries the
// latest counts. Incident names the incident that a join or resolve reply
// is about.
type slackJob struct {
	Kind     slackJobKind `json:"kind"`
	Thread   string       `json:"thread"`
	Incident string       `json:"incident,omitempty"`
	Since    time.Time    `json:"since"`
}

// Thread is the Slack state of one thread, kept in the checkpoint so a
// restart replies in the same thread. All incidents of one workload that
// route to one channel share a thread: a line that both the token-expired
// and the auth-failures policies select opens one thread, not two.
type Thread struct {
	// ID is the ID of the incident that opened the thread.
	ID string `json:"id"`
	// Group is the channel, namespace and workload the thread is for;
	// a storm summary has a group of its own.
	Group string `json:"group"`
	// Channel is the configured channel, and ChannelID the ID that Slack
	// returned for the parent message, which replies and chat.update need.
	Channel   string `json:"channel"`
	ChannelID string `json:"channel_id,omitempty"`
	TS        string `json:"ts,omitempty"`
	// Incidents holds the latest snapshot of every incident in the thread,
	// by incident ID; Order lists the IDs in the order they joined.
	Incidents map[string]incident.Incident `json:"incidents"`
	Order     []string                     `json:"order"`
	// Replied is each incident's count at the last message about it, and
	// LastReply when the last coalesced update went out.
	Replied     map[string]int `json:"replied"`
	LastReply   time.Time      `json:"last_reply,omitzero"`
	Dirty       bool           `json:"dirty,omitempty"`
	ReplyQueued bool           `json:"reply_queued,omitempty"`
	// Closing is set once every incident has resolved; the thread then
	// takes no new incident and goes away after the parent edit.
	Closing bool `json:"closing,omitempty"`
}

func (th *Thread) primary() incident.Incident { return th.Incidents[th.ID] }

func (th *Thread) allResolved() bool {
	for _, in := range th.Incidents {
		if in.State != incident.StateResolved {
			return false
		}
	}
	return true
}

func (th *Thread) clone() *Thread {
	c := *th
	c.Incidents = make(map[string]incident.Incident, len(th.Incidents))
	for k, v := range th.Incidents {
		c.Incidents[k] = v
	}
	c.Order = append([]string(nil), th.Order...)
	c.Replied = make(map[string]int, len(th.Replied))
	for k, v := range th.Replied {
		c.Replied[k] = v
	}
	return &c
}

// slackNotifier posts incidents to Slack. With a bot token each workload
// gets a thread per episode; with an incoming webhook each transition is
// one message.
type slackNotifier struct {
	d        *Dispatcher
	cfg      SlackConfig
	logger   *slog.Logger
	redactor *Redactor
	once     *logOnce
	client   *slack.Client // nil in webhook mode
	hookURL  secret.Value
	http     *http.Client

	queues map[string]*queue[slackJob] // by configured channel; fixed after construction

	mu          sync.Mutex             // guards the fields below
	threads     map[string]*Thread     // by thread ID
	groups      map[string]string      // open (not closing) thread ID by group
	byIncident  map[string]string      // thread ID by incident ID
	notes       map[string]*noteBatch  // queued notes by batch key
	noteThreads map[string]*noteThread // posted note groups by group
	authErr     error
}

func newSlackNotifier(d *Dispatcher, cfg SlackConfig, httpClient *http.Client, reg prometheus.Registerer) (*slackNotifier, error) {
	n := &slackNotifier{
		d:           d,
		cfg:         cfg,
		logger:      d.logger.With("notifier", "slack"),
		redactor:    d.redactor,
		once:        &d.once,
		http:        httpClient,
		queues:      map[string]*queue[slackJob]{},
		threads:     map[string]*Thread{},
		groups:      map[string]string{},
		byIncident:  map[string]string{},
		notes:       map[string]*noteBatch{},
		noteThreads: map[string]*noteThread{},
	}
	if cfg.TokenFile != "" || cfg.TokenEnv != "" {
		token, err := loadSecret("alerting.slack", "token", cfg.TokenFile, cfg.TokenEnv)
		if err != nil {
			return nil, err
		}
		d.redactor.Add(token)
		opts := []slack.Option{slack.OptionHTTPClient(httpClient)}
		if cfg.APIURL != "" {
			opts = append(opts, slack.OptionAPIURL(cfg.APIURL))
		}
		n.client = slack.New(token.Reveal(), opts...)
		if err := d.metrics.registerSlackAuth(reg); err != nil {
			return nil, err
		}
		n.addQueue(cfg.Channel)
		for _, r := range cfg.Routes {
			n.addQueue(r.Channel)
		}
		// Readiness reflects the last auth.test. Before the first one it
		// passes, so that a standby replica, which never runs the check,
		// stays ready.
	} else {
		hook, err := loadSecret("alerting.slack", "webhook_url", cfg.WebhookURLFile, cfg.WebhookURLEnv)
		if err != nil {
			return nil, err
		}
		d.redactor.Add(hook)
		n.hookURL = hook
		n.addQueue("webhook")
	}
	return n, nil
}

func (n *slackNotifier) addQueue(ch string) {
	if _, ok := n.queues[ch]; ok {
		return
	}
	label := "slack:" + ch
	n.d.metrics.initChannel(label)
	n.queues[ch] = newQueue[slackJob](func(l int) { n.d.metrics.queue.WithLabelValues(label).Set(float64(l)) })
}

func (n *slackNotifier) route(k incident.Key) string {
	if n.client == nil {
		return "webhook"
	}
	for _, r := range n.cfg.Routes {
		if r.Match.Matches(k) {
			return r.Channel
		}
	}
	return n.cfg.Channel
}

// groupOf returns the thread group of in: channel, namespace and
// workload. Storm summaries, and every incident in webhook mode, which has
// no threads, get a group of their own.
func (n *slackNotifier) groupOf(in *incident.Incident, channel string) string {
	if in.IsStorm() || n.client == nil {
		return "incident\x00" + in.ID
	}
	return channel + "\x00" + in.Key.Namespace + "\x00" + in.Key.Workload
}

// handle records ev and queues the Slack requests it needs. Folded
// incidents are skipped because their storm summary lists them.
func (n *slackNotifier) handle(ev incident.Event) {
	in := ev.Incident
	if in.Folded {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	th := n.threads[n.byIncident[in.ID]]
	if th == nil {
		if ev.Transition == incident.Resolved {
			// No thread was ever posted (Slack was configured after the
			// incident opened, or its message failed for good): a lone
			// resolve would only be noise.
			n.logger.Debug("slack resolve skipped: incident has no thread", "incident", in.ID)
			return
		}
		// An update for an unknown incident, for example one restored
		// from a checkpoint written without Slack, opens its thread now.
		th = n.join(in, ev.Time)
		if ev.Transition == incident.Opened {
			return
		}
	}
	th.Incidents[in.ID] = in
	switch ev.Transition {
	case incident.Updated:
		th.Dirty = true
	case incident.Resolved:
		n.push(th, jobResolveReply, in.ID, ev.Time)
		if th.allResolved() {
			th.Closing = true
			th.Dirty = false
			delete(n.groups, th.Group)
			n.push(th, jobResolveEdit, "", ev.Time)
		}
	}
}

// join adds in to the open thread of its group, or starts a thread.
func (n *slackNotifier) join(in incident.Incident, at time.Time) *Thread {
	ch := n.route(in.Key)
	group := n.groupOf(&in, ch)
	if th := n.threads[n.groups[group]]; th != nil {
		th.Incidents[in.ID] = in
		th.Order = append(th.Order, in.ID)
		n.byIncident[in.ID] = th.ID
		n.push(th, jobJoin, in.ID, at)
		return th
	}
	th := &Thread{
		ID: in.ID, Group: group, Channel: ch,
		Incidents: map[string]incident.Incident{in.ID: in},
		Order:     []string{in.ID},
		Replied:   map[string]int{},
	}
	n.threads[th.ID] = th
	n.groups[group] = th.ID
	n.byIncident[in.ID] = th.ID
	n.push(th, jobParent, in.ID, at)
	return th
}

func (n *slackNotifier) push(th *Thread, kind slackJobKind, incidentID string, at time.Time) {
	n.queues[th.Channel].push(slackJob{Kind: kind, Thread: th.ID, Incident: incidentID, Since: at})
}

// flushUpdates queues a reply for every thread with new matches whose last
// message is at least UpdateInterval old.
func (n *slackNotifier) flushUpdates(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, th := range n.threads {
		if th.Dirty && !th.ReplyQueued && !th.Closing && !th.LastReply.IsZero() && now.Sub(th.LastReply) >= n.cfg.UpdateInterval {
			th.Dirty = false
			th.ReplyQueued = true
			n.push(th, jobReply, "", now)
		}
	}
}

func (n *slackNotifier) run(ctx context.Context) {
	var wg sync.WaitGroup
	for ch, q := range n.queues {
		wg.Go(func() { n.runQueue(ctx, ch, q) })
	}
	if n.client != nil {
		wg.Go(func() { n.runAuthCheck(ctx) })
	}
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.flushUpdates(n.d.now())
			}
		}
	})
	wg.Wait()
}

func (n *slackNotifier) runQueue(ctx context.Context, ch string, q *queue[slackJob]) {
	for {
		job, ok := q.peek(ctx)
		if !ok {
			return
		}
		err := n.do(ctx, ch, job)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.logger.Debug("slack job dropped", "channel", ch, "thread", job.Thread, "err", err)
		}
		q.pop()
		n.d.finished(ctx)
		if !sleep(ctx, n.cfg.MessageInterval) {
			return
		}
	}
}

// render returns the message for job from a snapshot of its thread, and
// the thread_ts to post it under ("" for a new parent).
func (n *slackNotifier) render(job slackJob, th *Thread) (message, string) {
	primary := th.primary()
	switch job.Kind {
	case jobParent:
		return n.threadMessage(th, false), ""
	case jobReply:
		return n.updateMessage(th), th.TS
	case jobJoin:
		in := th.Incidents[job.Incident]
		return n.joinMessage(&in), th.TS
	case jobResolveReply:
		in := th.Incidents[job.Incident]
		return n.resolvedReply(&in), th.TS
	case jobResolveEdit:
		return n.threadMessage(th, true), th.TS
	}
	return message{Text: primary.ID}, ""
}

// do makes the request for job with retries. It returns ctx.Err() when
// ctx ended so the job stays queued.
func (n *slackNotifier) do(ctx context.Context, ch string, job slackJob) error {
	if job.Kind == jobNote {
		return n.doNote(ctx, ch, job)
	}
	n.mu.Lock()
	live := n.threads[job.Thread]
	if live == nil {
		n.mu.Unlock()
		return fmt.Errorf("slack: no thread %s", job.Thread)
	}
	th := live.clone()
	n.mu.Unlock()

	if job.Kind == jobResolveEdit && th.TS == "" {
		// The parent never went out, so there is nothing to edit.
		n.finish(job, th, "", "")
		return nil
	}
	msg, threadTS := n.render(job, th)
	edit := job.Kind == jobResolveEdit
	if threadTS == "" && job.Kind != jobParent && n.client != nil {
		// The parent never went out: post the whole thread as the parent
		// so the incident is still seen.
		msg = n.threadMessage(th, th.allResolved())
	}
	label := "slack:" + ch
	textOnly := false
	var sentTS, sentCh string
	send := func(ctx context.Context) error {
		m := msg
		if textOnly {
			m.Blocks = nil
		}
		var err error
		sentCh, sentTS, err = n.post(ctx, ch, th.ChannelID, threadTS, edit, th.TS, m)
		if isSlackError(err, "invalid_blocks") && !textOnly {
			// Blocks are cut to Slack's limits, so this points at a limit
			// we do not know about; the text alone still informs.
			n.once.log(n.logger, "invalid_blocks", "slack rejected blocks, sending text only", "channel", ch, "err", err)
			textOnly = true
			sentCh, sentTS, err = n.post(ctx, ch, th.ChannelID, threadTS, edit, th.TS, message{Text: m.Text})
		}
		return err
	}
	err := n.d.attempt(ctx, label, job.Since, 0, send, n.classify)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		v := n.classify(err)
		n.once.log(n.logger, label+" "+v.reason, "slack notification failed permanently",
			"channel", ch, "thread", th.ID, "reason", v.reason, "fix", slackFix(v.reason, ch), "err", err)
		n.setAuthErr(v.reason, err)
		n.finish(job, th, "", "")
		return err
	}
	n.finish(job, th, sentCh, sentTS)
	return nil
}

// finish updates the thread after a job, successful or not. rendered is
// the snapshot the job's message was rendered from, so the next update
// counts from what this one reported.
func (n *slackNotifier) finish(job slackJob, rendered *Thread, channelID, ts string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	th := n.threads[job.Thread]
	if th == nil {
		return
	}
	if th.TS == "" && ts != "" && job.Kind != jobResolveEdit {
		th.TS, th.ChannelID = ts, channelID
	}
	switch job.Kind {
	case jobParent, jobReply:
		if job.Kind == jobReply {
			th.ReplyQueued = false
		}
		th.LastReply = n.d.now()
		for id, in := range rendered.Incidents {
			th.Replied[id] = in.Count
		}
	case jobJoin:
		th.Replied[job.Incident] = rendered.Incidents[job.Incident].Count
	}
	if job.Kind == jobResolveEdit {
		delete(n.threads, th.ID)
		for id := range th.Incidents {
			delete(n.byIncident, id)
		}
	}
}

// post sends one message. With edit set it updates the message ts in
// channelID instead of posting.
func (n *slackNotifier) post(ctx context.Context, ch, channelID, threadTS string, edit bool, ts string, msg message) (string, string, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, n.d.requestTimeout, errSlackTimeout)
	defer cancel()
	if n.client == nil {
		wm := &slack.WebhookMessage{Text: msg.Text}
		if len(msg.Blocks) > 0 {
			wm.Blocks = &slack.Blocks{BlockSet: msg.Blocks}
		}
		return "", "", slack.PostWebhookCustomHTTPContext(ctx, n.hookURL.Reveal(), n.http, wm)
	}
	opts := []slack.MsgOption{slack.MsgOptionText(msg.Text, false)}
	if len(msg.Blocks) > 0 {
		opts = append(opts, slack.MsgOptionBlocks(msg.Blocks...))
	}
	if edit {
		_, _, _, err := n.client.UpdateMessageContext(ctx, channelID, ts, opts...)
		return channelID, ts, err
	}
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
		ch = channelID
	}
	return n.client.PostMessageContext(ctx, ch, opts...)
}

func isSlackError(err error, code string) bool {
	var se slack.SlackErrorResponse
	return errors.As(err, &se) && se.Err == code
}

// slackRetryable lists the "ok": false errors that a later attempt can
// fix.
var slackRetryable = map[string]bool{
	"ratelimited": true, "rate_limited": true, "internal_error": true, "fatal_error": true,
	"service_unavailable": true, "request_timeout": true, "team_added_to_org": true,
}

// slackReasons lists the "ok": false errors used as metric reasons as
// they are; any other becomes "slack_error".
var slackReasons = map[string]bool{
	"invalid_auth": true, "not_authed": true, "account_inactive": true, "token_revoked": true,
	"token_expired": true, "channel_not_found": true, "not_in_channel": true, "is_archived": true,
	"missing_scope": true, "invalid_blocks": true, "msg_too_long": true, "message_not_found": true,
	"cant_update_message": true, "ratelimited": true, "internal_error": true, "fatal_error": true,
	"service_unavailable": true, "request_timeout": true,
}

func (n *slackNotifier) classify(err error) verdict {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return verdict{reason: "rate_limited", retry: true, wait: max(rl.RetryAfter, time.Second)}
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		switch {
		case sc.Code == http.StatusTooManyRequests:
			// A 429 without Retry-After.
			return verdict{reason: "rate_limited", retry: true, wait: n.cfg.RetryAfter}
		case sc.Code >= 500 || sc.Code == http.StatusRequestTimeout:
			return verdict{reason: "server_error", retry: true}
		case n.client == nil && sc.Code == http.StatusForbidden:
			return verdict{reason: "invalid_auth"}
		case n.client == nil && sc.Code == http.StatusNotFound:
			return verdict{reason: "channel_not_found"}
		case n.client == nil && sc.Code == http.StatusGone:
			return verdict{reason: "is_archived"}
		}
		return verdict{reason: fmt.Sprintf("http_%d", sc.Code)}
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		reason := se.Err
		if !slackReasons[reason] {
			reason = "slack_error"
		}
		if se.Err == "ratelimited" || se.Err == "rate_limited" {
			return verdict{reason: "rate_limited", retry: true, wait: n.cfg.RetryAfter}
		}
		return verdict{reason: reason, retry: slackRetryable[se.Err]}
	}
	var ne net.Error
	if errors.Is(err, errSlackTimeout) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return verdict{reason: "timeout", retry: true}
	}
	// Connection refused or reset, DNS failures: the network may recover.
	return verdict{reason: "network", retry: true}
}

// slackFix returns what an operator does about a permanent Slack error.
func slackFix(reason, ch string) string {
	switch reason {
	case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired":
		return "the Slack credential is invalid or revoked: put a valid bot token (xoxb-…) or webhook URL in the file or variable named by alerting.slack"
	case "channel_not_found":
		return fmt.Sprintf("channel %q does not exist or the app cannot see it: fix alerting.slack.channel or routes, or use the channel ID", ch)
	case "not_in_channel":
		return fmt.Sprintf("invite the app to %s (/invite @app) or give it the chat:write.public scope", ch)
	case "is_archived":
		return fmt.Sprintf("channel %s is archived: unarchive it or route the incidents elsewhere", ch)
	case "missing_scope":
		return "add the chat:write scope to the Slack app and reinstall it"
	}
	return "see the err field; the message was dropped"
}

// setAuthErr marks Slack unready when a delivery failed because of the
// credential.
func (n *slackNotifier) setAuthErr(reason string, err error) {
	switch reason {
	case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired":
		n.mu.Lock()
		n.authErr = err
		n.mu.Unlock()
		n.d.metrics.setSlackAuth(false)
	}
}

func (n *slackNotifier) runAuthCheck(ctx context.Context) {
	t := time.NewTicker(n.cfg.AuthCheckInterval)
	defer t.Stop()
	for {
		n.checkAuth(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *slackNotifier) checkAuth(ctx context.Context) {
	ctx, cancel := context.WithTimeoutCause(ctx, n.d.requestTimeout, errSlackTimeout)
	defer cancel()
	resp, err := n.client.AuthTestContext(ctx)
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		return
	}
	err = n.redactor.Error(err)
	n.mu.Lock()
	prev := n.authErr
	n.authErr = err
	n.mu.Unlock()
	if err != nil {
		n.d.metrics.setSlackAuth(false)
		if prev == nil || prev.Error() != err.Error() {
			v := n.classify(err)
			n.logger.Error("slack credential check failed", "reason", v.reason, "fix", slackFix(v.reason, n.cfg.Channel), "err", err)
		}
		return
	}
	n.d.metrics.setSlackAuth(true)
	if prev != nil {
		n.logger.Info("slack credential check passed", "team", resp.Team, "bot_user", resp.User)
	}
}

// ready returns the last credential check error.
func (n *slackNotifier) ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.authErr != nil {
		return fmt.Errorf("slack: %w", n.authErr)
	}
	return nil
}

func (n *slackNotifier) idle() bool {
	for _, q := range n.queues {
		if q.len() > 0 {
			return false
		}
	}
	return true
}
