package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
	"github.com/authwatch/authwatch/remediation"
)

const reportSlackToken = "xoxb-report-test-secret"

func newReportDispatcher(t *testing.T, srv *slacktest.Server) *alerting.Dispatcher {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(reportSlackToken), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := alerting.New(alerting.Options{
		Config: alerting.Config{Slack: &alerting.SlackConfig{
			TokenFile: tokenFile, Channel: "#alerts", APIURL: srv.APIURL(), MessageInterval: time.Millisecond,
		}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func waitSlack(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRotationReportsReplyInIncidentThread(t *testing.T) {
	srv := slacktest.New(reportSlackToken, "hook", "alerts")
	defer srv.Close()
	d := newReportDispatcher(t, srv)
	in := alerting.SampleEvent(incident.Opened, time.Now())
	d.Notify(in)
	waitSlack(t, "incident parent", func() bool { return len(srv.Messages()) == 1 })

	r := noteReporter{notes: d}
	trig := remediation.Trigger{Policy: "token-expired", Namespace: in.Incident.Key.Namespace,
		Workload: in.Incident.Key.Workload, IncidentKey: in.Incident.ID}
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjk5OTk5OTk5OTl9.c2VjcmV0LXNpZw"
	reports := []remediation.Report{
		{Step: remediation.StepObtain, State: remediation.StateDone, Message: "token obtained (Bearer " + token + ")"},
		{Step: remediation.StepPatch, State: remediation.StateDone, Message: "Secret patched"},
		{Step: remediation.StepVerify, State: remediation.StateDone, Final: true, Outcome: remediation.OutcomeSucceeded,
			Duration: 42 * time.Second, Message: "new pods succeed"},
	}
	for _, rep := range reports {
		rep.Target, rep.RotationID, rep.Trigger, rep.Time = "api-token", "rot-1", trig, time.Now()
		if err := r.Report(t.Context(), rep); err != nil {
			t.Fatal(err)
		}
	}
	waitSlack(t, "rotation replies", func() bool {
		msgs := srv.Messages()
		return d.Idle() && len(msgs) >= 2 && strings.Contains(msgs[len(msgs)-1].Text, "api-token succeeded in 42s")
	})
	msgs := srv.Messages()
	all := ""
	for _, m := range msgs[1:] {
		if m.ThreadTS != msgs[0].TS {
			t.Errorf("rotation report %q posted outside the incident thread", m.Text)
		}
		all += m.Text + "\n"
	}
	for _, want := range []string{"obtain done", "patch done", "Rotation rot-1 of api-token succeeded in 42s"} {
		if !strings.Contains(all, want) {
			t.Errorf("thread replies lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(strings.Join(srv.Requests(), "\n"), token) {
		t.Error("a Slack request contains the token")
	}
}

func TestManualRotationReportsInOwnMessage(t *testing.T) {
	srv := slacktest.New(reportSlackToken, "hook", "alerts")
	defer srv.Close()
	d := newReportDispatcher(t, srv)
	// An open incident of the same workload does not take the manual
	// rotation's reports.
	in := alerting.SampleEvent(incident.Opened, time.Now())
	d.Notify(in)
	waitSlack(t, "incident parent", func() bool { return len(srv.Messages()) == 1 })

	r := noteReporter{notes: d}
	trig := remediation.Trigger{Target: "api-token", Manual: true, IncidentKey: in.Incident.ID}
	for _, rep := range []remediation.Report{
		{Step: remediation.StepPreflight, State: remediation.StateStarted, Message: "rotation requested by hand"},
		{Step: remediation.StepObtain, State: remediation.StateFailed, Final: true, Outcome: remediation.OutcomeFailed,
			Duration: 3 * time.Second, Message: "token source returned HTTP 500"},
	} {
		rep.Target, rep.RotationID, rep.Trigger, rep.Time, rep.DryRun = "api-token", "rot-7", trig, time.Now(), true
		if err := r.Report(t.Context(), rep); err != nil {
			t.Fatal(err)
		}
	}
	waitSlack(t, "manual rotation message", func() bool { return d.Idle() && len(srv.Messages()) >= 2 })
	msgs := srv.Messages()
	own := msgs[1]
	if own.ThreadTS != "" {
		t.Errorf("manual rotation report went to thread %q, want a message of its own", own.ThreadTS)
	}
	all := ""
	for _, m := range msgs[1:] {
		if m.ThreadTS != "" && m.ThreadTS != own.TS {
			t.Errorf("manual report %q in thread %q, want its own message %q", m.Text, m.ThreadTS, own.TS)
		}
		all += m.Text + "\n"
	}
	for _, want := range []string{"[dry run] Token rotation rot-7 of api-token, run by hand", "preflight started",
		"Rotation rot-7 of api-token failed at step obtain after 3s"} {
		if !strings.Contains(all, want) {
			t.Errorf("manual rotation messages lack %q:\n%s", want, all)
		}
	}
}

func TestRotationRouteKeyOfManualTrigger(t *testing.T) {
	cfg := remediation.Config{Targets: []remediation.Target{{
		Name:    "api-token",
		Secret:  remediation.SecretRef{Namespace: "pay", Name: "api", Key: "TOKEN"},
		Restart: []remediation.WorkloadRef{{Kind: "Deployment", Name: "api"}},
	}}}
	r := noteReporter{cfg: cfg}
	got := r.routeKey(remediation.Report{Target: "api-token", Trigger: remediation.Trigger{Manual: true}})
	if want := (incident.Key{Namespace: "pay", Workload: "Deployment/api"}); got != want {
		t.Errorf("route key = %+v, want %+v", got, want)
	}
	got = r.routeKey(remediation.Report{Target: "api-token", Trigger: remediation.Trigger{Namespace: "shop", Workload: "Deployment/web"}})
	if want := (incident.Key{Namespace: "shop", Workload: "Deployment/web"}); got != want {
		t.Errorf("route key of an incident trigger = %+v, want %+v", got, want)
	}
}
