package alerting

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestDispatcherReconfigureKeepsThreads(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts", "payments")
	defer srv.Close()
	oldHook, newHook := &hookReceiver{}, &hookReceiver{}
	oldSrv, newSrv := httptest.NewServer(oldHook), httptest.NewServer(newHook)
	defer oldSrv.Close()
	defer newSrv.Close()
	key := writeFile(t, "key", testWebhookKey)

	cfg := Config{Slack: slackConfig(t, srv), Webhooks: []WebhookConfig{{Name: "old", URL: oldSrv.URL, SecretFile: key}}}
	h := newHarness(t, cfg)
	h.start(t)
	api := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: api, Time: t0})
	waitFor(t, "parent and old webhook", 30*time.Second, func() bool {
		return h.d.Idle() && len(srv.Messages()) == 1 && len(oldHook.received()) == 1
	})

	bad := cfg
	bad.Webhooks = []WebhookConfig{{Name: "new", URL: "ftp://x", SecretFile: key}}
	if err := h.d.Reconfigure(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "alerting.webhooks[0].url") {
		t.Fatalf("Reconfigure(bad) = %v, want an error naming alerting.webhooks[0].url", err)
	}

	next := Config{Slack: slackConfig(t, srv), Webhooks: []WebhookConfig{{Name: "new", URL: newSrv.URL, SecretFile: key}}}
	next.Slack.Routes = []Route{{Match: Matcher{Namespaces: []string{"payments"}}, Channel: "#payments"}}
	if err := h.d.Reconfigure(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.d.Channels(), ","); got != "slack:#alerts,slack:#payments,webhook:new" {
		t.Errorf("channels after reload = %s", got)
	}

	api.State, api.ResolvedAt = incident.StateResolved, t0.Add(5*time.Minute)
	pay := sampleIncident("payments", "Deployment/pay", 5)
	h.d.Notify(
		incident.Event{Transition: incident.Resolved, Incident: api, Time: t0},
		incident.Event{Transition: incident.Opened, Incident: pay, Time: t0},
	)
	waitFor(t, "resolve in the old thread and the routed parent", 30*time.Second, func() bool {
		m := srv.Messages()
		return h.d.Idle() && len(m) == 3 && m[0].Edits == 1 && len(newHook.received()) == 2
	})
	msgs := srv.Messages()
	if msgs[1].ThreadTS != msgs[0].TS && msgs[2].ThreadTS != msgs[0].TS {
		t.Errorf("resolve after reload is not in the original thread: %+v", msgs)
	}
	routed := false
	for _, m := range msgs {
		routed = routed || (m.Channel == "C0002" && strings.Contains(m.Text, "payments/Deployment/pay"))
	}
	if !routed {
		t.Errorf("payments incident not in #payments: %+v", msgs)
	}
	if n := len(oldHook.received()); n != 1 {
		t.Errorf("old webhook got %d deliveries, want only the one before the reload", n)
	}
}

func TestDispatcherReconfigureBeforeRun(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts", "payments")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	next := Config{Slack: slackConfig(t, srv)}
	next.Slack.Channel = "#payments"
	if err := h.d.Reconfigure(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	h.start(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/web", 5), Time: t0})
	waitFor(t, "both parents", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) >= 1 })
	// The queued parent for #alerts is dropped with a warning, because
	// the new configuration has no such channel; the new one goes to
	// #payments.
	msgs := srv.Messages()
	if len(msgs) != 1 || msgs[0].Channel != "C0002" {
		t.Errorf("messages = %+v, want one in #payments", msgs)
	}
	if !strings.Contains(h.logs.String(), "channel no longer configured") {
		t.Error("dropped thread not logged")
	}
	if got := testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:#alerts", "not_configured")); got != 1 {
		t.Errorf("failures{not_configured} = %v, want the dropped parent", got)
	}
}
