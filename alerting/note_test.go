package alerting

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestNoteRepliesInIncidentThread(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "parent", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })

	// Two steps within a second share one reply; a step after the
	// reply went out gets its own.
	h.d.Note(Note{Incident: in.ID, Group: "rot-1", Text: "obtain done: token obtained"})
	h.d.Note(Note{Incident: in.ID, Group: "rot-1", Text: "patch done: Secret patched"})
	waitFor(t, "first reply", 30*time.Second, func() bool { return len(srv.Messages()) == 2 })
	h.d.Note(Note{Incident: in.ID, Group: "rot-1", Text: "verify done: no failures", Last: true})
	waitFor(t, "second reply", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 3 })

	msgs := srv.Messages()
	parent := msgs[0]
	for i, m := range msgs[1:] {
		if m.ThreadTS != parent.TS {
			t.Errorf("reply %d has thread_ts %q, want the parent's %q", i, m.ThreadTS, parent.TS)
		}
	}
	if !strings.Contains(msgs[1].Text, "obtain done") || !strings.Contains(msgs[1].Text, "patch done") {
		t.Errorf("first reply %q lacks one of the two steps", msgs[1].Text)
	}
	if !strings.Contains(msgs[2].Text, "verify done") {
		t.Errorf("second reply %q lacks the verify step", msgs[2].Text)
	}
	if parent.Edits != 0 {
		t.Errorf("parent edited %d times by notes, want 0", parent.Edits)
	}
}

func TestNoteGroupStaysInResolvedThread(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "parent", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })
	h.d.Note(Note{Incident: in.ID, Group: "rot-1", Title: "Token rotation rot-1", Text: "patch done"})
	waitFor(t, "first note", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 2 })

	// The incident resolves while the rotation still verifies.
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "parent edit", 30*time.Second, func() bool { return h.d.Idle() && srv.Messages()[0].Edits == 1 })
	h.d.Note(Note{Incident: in.ID, Group: "rot-1", Title: "Token rotation rot-1", Text: "verify done", Last: true})
	waitFor(t, "last note", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 4 })

	msgs := srv.Messages()
	for _, m := range msgs[1:] {
		if m.ThreadTS != msgs[0].TS {
			t.Errorf("message %q has thread_ts %q, want the incident's thread %q", m.Text, m.ThreadTS, msgs[0].TS)
		}
	}
	if !strings.Contains(msgs[3].Text, "verify done") {
		t.Errorf("last message %q, want the verify note", msgs[3].Text)
	}
}

func TestNoteGroupPostsMessageOfItsOwn(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts", "payments")
	defer srv.Close()
	cfg := slackConfig(t, srv)
	cfg.Routes = []Route{{Match: Matcher{Namespaces: []string{"pay"}}, Channel: "#payments"}}
	h := newHarness(t, Config{Slack: cfg})
	h.start(t)

	key := incident.Key{Namespace: "pay", Workload: "Deployment/api"}
	h.d.Note(Note{Group: "rot-9", Key: key, Title: "Token rotation of pay-token, run by hand", Text: "preflight started"})
	waitFor(t, "group parent", 30*time.Second, func() bool { return len(srv.Messages()) == 1 })
	h.d.Note(Note{Group: "rot-9", Key: key, Title: "Token rotation of pay-token, run by hand", Text: "rotation succeeded", Last: true})
	waitFor(t, "group reply", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 2 })
	// The group ended with Last: a note with the same group starts anew.
	h.d.Note(Note{Group: "rot-9", Key: key, Title: "Token rotation of pay-token, run by hand", Text: "preflight started"})
	waitFor(t, "new parent", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 3 })

	msgs := srv.Messages()
	if msgs[0].ThreadTS != "" || !strings.Contains(msgs[0].Text, "run by hand") {
		t.Errorf("first note: thread_ts %q text %q, want a new message with the title", msgs[0].ThreadTS, msgs[0].Text)
	}
	if msgs[1].ThreadTS != msgs[0].TS {
		t.Errorf("second note: thread_ts %q, want %q", msgs[1].ThreadTS, msgs[0].TS)
	}
	if strings.Contains(msgs[1].Text, "run by hand") {
		t.Errorf("reply %q repeats the title", msgs[1].Text)
	}
	if msgs[2].ThreadTS != "" {
		t.Errorf("note after Last: thread_ts %q, want a new message", msgs[2].ThreadTS)
	}
	for i, m := range msgs {
		if m.Channel != msgs[0].Channel {
			t.Errorf("message %d in channel %q, want %q", i, m.Channel, msgs[0].Channel)
		}
	}
	if got := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#payments", "sent")); got != 3 {
		t.Errorf("authwatch_notifications_total{channel=slack:#payments,result=sent} = %v, want 3", got)
	}
}

func TestNoteWithoutThreadPostsAlone(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	h.d.Note(Note{Incident: "gone-incident", Group: "rot-2", Title: "Token rotation of api-token", Text: "verify done"})
	waitFor(t, "note", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 1 })
	if m := srv.Messages()[0]; m.ThreadTS != "" || !strings.Contains(m.Text, "Token rotation of api-token") {
		t.Errorf("note for an incident without thread: thread_ts %q text %q, want a new titled message", m.ThreadTS, m.Text)
	}
}

func TestNoteRetriesRateLimitAndServerError(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.Inject("chat.postMessage", slacktest.Fault{Status: 429}, slacktest.Fault{Status: 500}, slacktest.Fault{Error: "ratelimited"})
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	h.start(t)

	h.d.Note(Note{Group: "rot-3", Title: "Token rotation of api-token", Text: "obtain failed: HTTP 500"})
	waitFor(t, "note after retries", 30*time.Second, func() bool { return h.d.Idle() && len(srv.Messages()) == 1 })
	if got := srv.Calls("chat.postMessage"); got != 4 {
		t.Errorf("chat.postMessage called %d times, want 4 (3 faults, then success)", got)
	}
}

func TestNoteSurvivesCheckpoint(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := Config{Slack: slackConfig(t, srv)}
	first := newHarness(t, cfg)
	first.d.Note(Note{Group: "rot-4", Title: "Token rotation of api-token", Text: "patch done"})
	st := first.d.Export()
	if len(st.Notes) != 1 {
		t.Fatalf("exported %d note batches, want 1", len(st.Notes))
	}

	second := newHarness(t, cfg)
	if err := second.d.Import(st); err != nil {
		t.Fatal(err)
	}
	second.start(t)
	waitFor(t, "restored note", 30*time.Second, func() bool { return second.d.Idle() && len(srv.Messages()) == 1 })
	if m := srv.Messages()[0]; !strings.Contains(m.Text, "patch done") {
		t.Errorf("restored note text %q, want the patch step", m.Text)
	}
}

func TestNoteWithoutSlackIsDropped(t *testing.T) {
	h := newHarness(t, Config{})
	h.d.Note(Note{Group: "rot-5", Text: "patch done"})
	if !strings.Contains(h.logs.String(), "note dropped: slack is not configured") {
		t.Errorf("dropped note not logged; logs:\n%s", h.logs.String())
	}
}
