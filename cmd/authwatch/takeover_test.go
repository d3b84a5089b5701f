package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/checkpoint"
	"github.com/authwatch/authwatch/rules"
)

// TestTakeOverReadsLatestCheckpoint starts a standby before the leader
// writes its checkpoint: the standby must restore what the leader wrote
// last, when it takes over, and not open the leader's incident again.
func TestTakeOverReadsLatestCheckpoint(t *testing.T) {
	client := fake.NewClientset()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tokenFile := filepath.Join(t.TempDir(), "slack-token")
	if err := os.WriteFile(tokenFile, []byte("xoxb-takeover-test-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Alerting.Slack = &alerting.SlackConfig{TokenFile: tokenFile, Channel: "#alerts", APIURL: "http://127.0.0.1:1/api/"}

	// The standby starts while no checkpoint exists.
	standbyStore, err := checkpoint.New(checkpoint.Options{
		Logger: logger, Registerer: prometheus.NewRegistry(),
		Client: client, Namespace: "authwatch", Name: "authwatch-checkpoint",
	})
	if err != nil {
		t.Fatal(err)
	}
	standby, err := newIncidentStage(logger, prometheus.NewRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Later the leader opens an incident, queues its Slack thread and
	// writes the checkpoint.
	leaderStore := newTestStore(t, client)
	leader, err := newIncidentStage(logger, prometheus.NewRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.restore(leaderStore); err != nil {
		t.Fatal(err)
	}
	leaderStore.Register(checkpointWatchSection, func() ([]byte, error) { return []byte("resume points of the leader"), nil })
	match := func() *rules.Match {
		return &rules.Match{RuleID: "jwt-expired", Category: rules.TokenExpired, Severity: rules.SeverityError,
			Line: rules.Line{Text: []byte("token expired"), Time: time.Now(),
				Source: rules.Source{Namespace: "shop", Pod: "api-1", Container: "app", Workload: "Deployment/api"}}}
	}
	leader.HandleMatch(match())
	if err := leaderStore.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	leaderOpen := leader.engine.Open()
	if len(leaderOpen) != 1 {
		t.Fatalf("leader has %d open incidents, want 1", len(leaderOpen))
	}

	saved, err := takeOver(t.Context(), standbyStore, standby)
	if err != nil {
		t.Fatal(err)
	}
	if string(saved) != "resume points of the leader" {
		t.Errorf("resume points = %q, want the leader's latest", saved)
	}
	open := standby.engine.Open()
	if len(open) != 1 || open[0].ID != leaderOpen[0].ID {
		t.Fatalf("open incidents after takeover = %v, want the leader's %s", open, leaderOpen[0].ID)
	}
	if th := standby.notify.Export().Threads[leaderOpen[0].ID]; th == nil {
		t.Errorf("slack thread of %s not restored", leaderOpen[0].ID)
	}

	// New matches of the same workload update the restored incident.
	var opened int
	standby.subscribe(func(evs []incident.Event) {
		for _, ev := range evs {
			if ev.Transition == incident.Opened {
				opened++
			}
		}
	})
	standby.HandleMatch(match())
	if opened != 0 {
		t.Errorf("the new leader opened %d incidents again, want 0", opened)
	}
}

func TestTakeOverWithoutStore(t *testing.T) {
	stage, err := newIncidentStage(slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), defaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	saved, err := takeOver(t.Context(), nil, stage)
	if err != nil || saved != nil {
		t.Errorf("takeOver without a store = %q, %v; want nil, nil", saved, err)
	}
}
