package alerting

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestSlackThreadLifecycle(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "parent message", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })

	in.Count = 9
	h.d.Notify(incident.Event{Transition: incident.Updated, Incident: in, Time: t0})
	waitFor(t, "thread reply", 30*time.Second, func() bool { return len(srv.Messages()) == 2 })

	in.State = incident.StateResolved
	in.ResolvedAt = t0.Add(5 * time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "resolve", 30*time.Second, func() bool {
		m := srv.Messages()
		return len(m) == 3 && m[0].Edits == 1
	})

	msgs := srv.Messages()
	parent := msgs[0]
	if parent.ThreadTS != "" {
		t.Errorf("parent has thread_ts %q", parent.ThreadTS)
	}
	for i, m := range msgs[1:] {
		if m.ThreadTS != parent.TS {
			t.Errorf("message %d thread_ts = %q, want parent %q", i+1, m.ThreadTS, parent.TS)
		}
	}
	if !strings.Contains(msgs[1].Text, "4 more matches (9 in total") {
		t.Errorf("reply text = %q", msgs[1].Text)
	}
	if !strings.Contains(msgs[2].Text, "Resolved") {
		t.Errorf("resolve reply = %q", msgs[2].Text)
	}
	if !strings.Contains(parent.Text, "[resolved]") || !strings.Contains(string(parent.Blocks), "Resolved") {
		t.Errorf("edited parent = %q", parent.Text)
	}
	// The server stores the edit before the client counts it.
	waitFor(t, "sent = 4 (parent, reply, resolve reply, edit)", 30*time.Second, func() bool {
		return testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#alerts", "sent")) == 4
	})
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready() = %v, want nil after auth.test passed", err)
	}
}

func TestSlackUpdatesCoalesced(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := slackConfig(t, srv)
	cfg.UpdateInterval = time.Hour
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	for i := range 20 {
		in.Count = 6 + i
		h.d.Notify(incident.Event{Transition: incident.Updated, Incident: in, Time: t0})
	}
	in.State = incident.StateResolved
	in.ResolvedAt = t0.Add(time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "resolve", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) >= 2 })
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("messages = %d, want parent and resolve only (updates coalesced into the resolve)", len(msgs))
	}
	if !strings.Contains(msgs[1].Text, "25 matches in total") {
		t.Errorf("resolve reply = %q, want the final count", msgs[1].Text)
	}
}

func TestSlackRetries(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.Inject("chat.postMessage",
		slacktest.Fault{Status: 429, RetryAfter: "1"},
		slacktest.Fault{Status: 429},
		slacktest.Fault{Error: "ratelimited"},
		slacktest.Fault{Status: 500},
		slacktest.Fault{Status: 503},
		slacktest.Fault{Error: "internal_error"},
	)
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "delivery after faults", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })

	if got := srv.Calls("chat.postMessage"); got != 7 {
		t.Errorf("postMessage calls = %d, want 7 (6 faults, 1 success)", got)
	}
	for reason, want := range map[string]float64{"rate_limited": 3, "server_error": 2, "internal_error": 1} {
		if got := testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:#alerts", reason)); got != want {
			t.Errorf("failures{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(h.d.metrics.retries.WithLabelValues("slack:#alerts")); got != 6 {
		t.Errorf("retries = %v, want 6", got)
	}
	if got := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#alerts", "failed")); got != 0 {
		t.Errorf("failed = %v, want 0", got)
	}
}

func TestSlackPermanentErrorLoggedOnce(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := slackConfig(t, srv)
	cfg.Routes = []Route{{Match: Matcher{Namespaces: []string{"payments"}}, Channel: "#payments"}}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)
	for i := range 3 {
		h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("payments", fmt.Sprintf("Deployment/p%d", i), 5), Time: t0})
	}
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "queues drained", 30*time.Second, h.d.Idle)

	if got := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#payments", "failed")); got != 3 {
		t.Errorf("failed = %v, want 3", got)
	}
	if got := testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:#payments", "channel_not_found")); got != 3 {
		t.Errorf("failures{channel_not_found} = %v, want 3", got)
	}
	if got := srv.Calls("chat.postMessage"); got != 4 {
		t.Errorf("postMessage calls = %d, want 4 (no retry of a permanent error)", got)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, `"level":"ERROR","msg":"slack notification failed permanently"`); n != 1 {
		t.Errorf("error logs = %d, want 1\n%s", n, logs)
	}
	if !strings.Contains(logs, `does not exist or the app cannot see it`) {
		t.Errorf("log lacks the fix:\n%s", logs)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("delivered = %d, want the shop incident in #alerts", n)
	}
}

func TestSlackBlockLimits(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := slackConfig(t, srv)
	for i := range 30 {
		cfg.Links = append(cfg.Links, Link{Text: strings.Repeat("Dashboard ", 12), URL: "https://grafana.example/d/x?ns={{.Namespace | urlquery}}&w={{.Name}}&i=" + fmt.Sprint(i)})
	}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)

	in := sampleIncident(strings.Repeat("n", 63), "Deployment/"+strings.Repeat("w", 250), 5)
	in.First.Text = strings.Repeat("x<&>", 5000)
	in.Latest.Text = strings.Repeat("ü", 9000)
	in.Pods = nil
	for i := range incident.MaxNames {
		in.Pods = append(in.Pods, strings.Repeat("p", 250)+fmt.Sprint(i))
	}
	in.MorePods = 40
	for i := range 200 {
		in.Rules[fmt.Sprintf("rule-%03d-%s", i, strings.Repeat("r", 40))] = i
	}
	storm := incident.Incident{ID: "storm", Key: incident.Key{Policy: incident.StormPolicy}, State: incident.StateFiring, FiredAt: t0, Latest: in.Latest}
	for i := range incident.MaxMembers {
		storm.Members = append(storm.Members, incident.Key{Policy: "auth-failures", Namespace: strings.Repeat("n", 60), Workload: fmt.Sprintf("Deployment/%s-%d", strings.Repeat("w", 200), i)})
	}
	storm.MoreMembers = 500
	h.d.Notify(
		incident.Event{Transition: incident.Opened, Incident: in, Time: t0},
		incident.Event{Transition: incident.Opened, Incident: storm, Time: t0},
	)
	waitFor(t, "both messages", 30*time.Second, func() bool { return len(srv.Messages()) == 2 })
	if n := srv.InvalidBlocks(); n != 0 {
		t.Errorf("invalid_blocks answers = %d, want 0", n)
	}
	var blocks []map[string]any
	if err := json.Unmarshal(srv.Messages()[0].Blocks, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatal("message without blocks")
	}
}

func TestSlackInvalidBlocksFallsBackToText(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.Inject("chat.postMessage", slacktest.Fault{Error: "invalid_blocks"})
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "text-only message", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })
	if m := srv.Messages()[0]; len(m.Blocks) != 0 || !strings.Contains(m.Text, "auth-failures") {
		t.Errorf("fallback message = %+v, want text only", m)
	}
}

func TestSlackAuthCheckFeedsReadiness(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.SetAuth(false)
	cfg := slackConfig(t, srv)
	cfg.AuthCheckInterval = 20 * time.Millisecond
	h := newHarness(t, Config{Slack: cfg})
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready() = %v before the first check, want nil so standbys stay ready", err)
	}
	h.start(t)
	waitFor(t, "failed check", 30*time.Second, func() bool { return srv.Calls("auth.test") >= 2 })
	if err := h.d.Ready(); err == nil || !strings.Contains(err.Error(), "invalid_auth") {
		t.Errorf("Ready() = %v, want invalid_auth", err)
	}
	if got := testutil.ToFloat64(h.d.metrics.slackAuth); got != 0 {
		t.Errorf("authwatch_slack_auth_ok = %v, want 0", got)
	}
	if n := strings.Count(h.logs.String(), "slack credential check failed"); n != 1 {
		t.Errorf("check failure logged %d times, want once", n)
	}
	srv.SetAuth(true)
	waitFor(t, "recovery", 30*time.Second, func() bool { return h.d.Ready() == nil })
	if got := testutil.ToFloat64(h.d.metrics.slackAuth); got != 1 {
		t.Errorf("authwatch_slack_auth_ok = %v, want 1", got)
	}
}

func TestSlackIncomingWebhook(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.Inject("webhook", slacktest.Fault{Status: 500}, slacktest.Fault{Status: 429})
	cfg := &SlackConfig{WebhookURLFile: writeFile(t, "hook", srv.WebhookURL()), MessageInterval: time.Millisecond, UpdateInterval: time.Millisecond, RetryAfter: 20 * time.Millisecond}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "two webhook messages", 30*time.Second, func() bool { return len(srv.Messages()) == 2 })
	if got := srv.Messages()[1].Text; !strings.Contains(got, "Resolved") {
		t.Errorf("second message = %q, want the resolve", got)
	}
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready() = %v for webhook mode", err)
	}
}

func TestSlackIncomingWebhookWrongURL(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := &SlackConfig{WebhookURLFile: writeFile(t, "hook", srv.URL+"/services/T000/B000/wrongsecret999"), MessageInterval: time.Millisecond}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "failure", 30*time.Second, func() bool {
		return testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:webhook", "failed")) == 1
	})
	if got := testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:webhook", "invalid_auth")); got != 1 {
		t.Errorf("failures{invalid_auth} = %v, want 1", got)
	}
	if strings.Contains(h.logs.String(), "wrongsecret999") {
		t.Error("log contains the webhook URL secret")
	}
}

func TestSlackTimeoutRetried(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	// The stand-in holds the first post past the client's timeout and
	// then fails it, so the retry is the only message.
	srv.Inject("chat.postMessage", slacktest.Fault{Delay: 2 * time.Second, Status: 503})
	h := newHarness(t, Config{Slack: slackConfig(t, srv)}, func(o *Options) { o.SlackTimeout = 300 * time.Millisecond })
	h.start(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "delivery after a timeout", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })
	waitFor(t, "timeout counted", 30*time.Second, func() bool {
		return testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:#alerts", "timeout")) == 1
	})
	if got := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#alerts", "failed")); got != 0 {
		t.Errorf("failed = %v, want 0", got)
	}
}

func TestSlackRoutesByNamespaceAndWorkload(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts", "payments", "web")
	defer srv.Close()
	cfg := slackConfig(t, srv)
	cfg.Routes = []Route{
		{Match: Matcher{Namespaces: []string{"payments"}}, Channel: "#payments"},
		{Match: Matcher{Workloads: []string{"Deployment/web-*"}}, Channel: "web"},
	}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)
	h.d.Notify(
		incident.Event{Transition: incident.Opened, Incident: sampleIncident("payments", "Deployment/pay", 5), Time: t0},
		incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/web-v2", 5), Time: t0},
		incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0},
	)
	waitFor(t, "three parents", 30*time.Second, func() bool { return len(srv.Messages()) == 3 })
	got := map[string]string{}
	for _, m := range srv.Messages() {
		got[m.Channel] = m.Text
	}
	for ch, workload := range map[string]string{"C0001": "shop/Deployment/api", "C0002": "payments/Deployment/pay", "C0003": "shop/Deployment/web-v2"} {
		if !strings.Contains(got[ch], workload) {
			t.Errorf("channel %s got %q, want the %s incident", ch, got[ch], workload)
		}
	}
}
