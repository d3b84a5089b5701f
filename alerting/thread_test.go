package alerting

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestSlackPoliciesShareWorkloadThread(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	expired := sampleIncident("shop", "Deployment/api", 1)
	expired.ID, expired.Key.Policy = "expired-1", "token-expired"
	failures := sampleIncident("shop", "Deployment/api", 5)
	failures.ID = "failures-1"
	other := sampleIncident("shop", "Deployment/web", 5)
	other.ID = "web-1"
	h.d.Notify(
		incident.Event{Transition: incident.Opened, Incident: expired, Time: t0},
		incident.Event{Transition: incident.Opened, Incident: failures, Time: t0},
		incident.Event{Transition: incident.Opened, Incident: other, Time: t0},
	)
	waitFor(t, "parents and join", 30*time.Second, func() bool { return len(srv.Messages()) == 3 })

	expired.State, expired.ResolvedAt = incident.StateResolved, t0.Add(5*time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: expired, Time: t0})
	waitFor(t, "first resolve reply", 30*time.Second, func() bool { return len(srv.Messages()) == 4 })
	if srv.Messages()[0].Edits != 0 {
		t.Error("parent edited while auth-failures is still firing")
	}
	failures.State, failures.ResolvedAt = incident.StateResolved, t0.Add(6*time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: failures, Time: t0})
	waitFor(t, "parent edit", 30*time.Second, func() bool { return h.d.Idle() && srv.Messages()[0].Edits == 1 })

	msgs := srv.Messages()
	var parents []string
	for _, m := range msgs {
		if m.ThreadTS == "" {
			parents = append(parents, m.Text)
		}
	}
	if len(parents) != 2 {
		t.Fatalf("parents = %q, want one for api and one for web", parents)
	}
	api := msgs[0]
	var inThread []string
	for _, m := range msgs {
		if m.ThreadTS == api.TS {
			inThread = append(inThread, m.Text)
		}
	}
	want := []string{"Policy auth-failures also fired", "Resolved (token-expired)", "Resolved (auth-failures)"}
	if len(inThread) != len(want) {
		t.Fatalf("thread replies = %q, want %d", inThread, len(want))
	}
	for i, w := range want {
		if !strings.Contains(inThread[i], w) {
			t.Errorf("reply %d = %q, want it to contain %q", i, inThread[i], w)
		}
	}
	if !strings.Contains(string(api.Blocks), "Also in this thread") || !strings.Contains(api.Text, "[resolved]") {
		t.Errorf("edited parent = %q", api.Text)
	}
}

func TestSlackThreadSurvivesRestart(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := slackConfig(t, srv)

	first := newHarness(t, Config{Slack: cfg})
	ctx, cancel := contextWithCancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = first.d.Run(ctx) }()
	in := sampleIncident("shop", "Deployment/api", 5)
	first.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "parent", 30*time.Second, func() bool { return first.d.Idle() && len(srv.Messages()) == 1 })
	// Stop with a resolve still queued: it must survive in the state.
	cancel()
	<-done
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(5*time.Minute)
	first.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	raw, err := json.Marshal(first.d.Export())
	if err != nil {
		t.Fatal(err)
	}

	second := newHarness(t, Config{Slack: cfg})
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if err := second.d.Import(st); err != nil {
		t.Fatal(err)
	}
	second.start(t)
	waitFor(t, "resolve after restart", 30*time.Second, func() bool {
		m := srv.Messages()
		return second.d.Idle() && len(m) == 2 && m[0].Edits == 1
	})
	msgs := srv.Messages()
	if msgs[1].ThreadTS != msgs[0].TS {
		t.Errorf("resolve after restart went to thread %q, want the parent %q", msgs[1].ThreadTS, msgs[0].TS)
	}
	if n := srv.Calls("chat.postMessage"); n != 2 {
		t.Errorf("postMessage calls = %d, want 2: nothing repeated", n)
	}
}

func TestSlackUnknownIncidentEvents(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	resolved := sampleIncident("shop", "Deployment/gone", 5)
	resolved.State, resolved.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	updated := sampleIncident("shop", "Deployment/restored", 7)
	h.d.Notify(
		incident.Event{Transition: incident.Resolved, Incident: resolved, Time: t0},
		incident.Event{Transition: incident.Updated, Incident: updated, Time: t0},
	)
	waitFor(t, "queues drained", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) >= 1 })
	msgs := srv.Messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, "Deployment/restored") {
		t.Errorf("messages = %+v, want one parent for the updated incident and nothing for the lone resolve", msgs)
	}
}
