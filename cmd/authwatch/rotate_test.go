package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/remediation"
)

// TestRotationTriggersOpenedOnly checks that only incident openings of
// real workloads reach the rotator: updates from old pods during a
// rollout, resolutions and storm summaries must not start a rotation.
func TestRotationTriggersOpenedOnly(t *testing.T) {
	dry := true
	cfg := remediation.Config{Targets: []remediation.Target{{
		Name:    "tb",
		On:      []string{"token-expired"},
		Secret:  remediation.SecretRef{Namespace: "town", Name: "s", Key: "k"},
		Restart: []remediation.WorkloadRef{{Kind: "Deployment", Name: "town-builder"}},
		Source:  remediation.Source{Command: &remediation.CommandSource{Command: []string{"/bin/true"}}},
		DryRun:  &dry,
	}}}
	var (
		mu      sync.Mutex
		reports []remediation.Report
	)
	finals := func() (n int, keys []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports {
			if r.Final {
				n++
				keys = append(keys, r.Trigger.IncidentKey)
			}
		}
		return n, keys
	}
	rot, err := remediation.New(remediation.Options{
		Config: cfg, Client: fake.NewClientset(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: prometheus.NewRegistry(), PollInterval: 10 * time.Millisecond,
		Reporter: remediation.ReporterFunc(func(_ context.Context, r remediation.Report) error {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, r)
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	in := incident.Incident{ID: "i1", Key: incident.Key{Policy: "token-expired", Namespace: "town", Workload: "Deployment/town-builder"}, Category: "token_expired"}
	storm := in
	storm.ID, storm.Key.Policy = "s1", incident.StormPolicy
	updated, resolved := in, in
	updated.ID, resolved.ID = "u1", "r1"
	feed := rotationTriggers(rot)
	feed([]incident.Event{
		{Transition: incident.Updated, Incident: updated},
		{Transition: incident.Resolved, Incident: resolved},
		{Transition: incident.Opened, Incident: storm},
		{Transition: incident.Opened, Incident: in},
	})

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rot.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := finals(); n == 0 && time.Now().Before(deadline); n, _ = finals() {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n, keys := finals()
	if n != 1 {
		t.Fatalf("%d rotations, want 1 for the one opening", n)
	}
	if keys[0] != "i1" {
		t.Errorf("rotation for incident %q, want i1", keys[0])
	}
}

func TestPrintReporterLines(t *testing.T) {
	var b bytes.Buffer
	p := &printReporter{w: &b}
	_ = p.Report(t.Context(), remediation.Report{Step: remediation.StepPatch, State: remediation.StateDone, Message: "Secret n/s key k patched"})
	_ = p.Report(t.Context(), remediation.Report{DryRun: true, Step: remediation.StepRestart, State: remediation.StatePlanned, Message: "would restart"})
	_ = p.Report(t.Context(), remediation.Report{Final: true, RotationID: "r1", Target: "tb", Message: "succeeded", Duration: 1500 * time.Millisecond})
	want := "patch     done     Secret n/s key k patched\n" +
		"[dry run] restart   planned  would restart\n" +
		"rotation r1 of tb: succeeded (1.5s)\n"
	if b.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestRunLeadingWithoutElector(t *testing.T) {
	boom := errors.New("boom")
	if err := runLeading(t.Context(), nil, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("runLeading = %v, want the lead error", err)
	}
}

func TestRotateCommandErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authwatch.yaml")
	if err := os.WriteFile(path, []byte("remediation:\n  targets: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no config", args: []string{"rotate", "tb"}, want: "missing --config"},
		{name: "unknown target", args: []string{"rotate", "tb", "--config", path}, want: `unknown target "tb": the config file defines no targets`},
		{name: "no target", args: []string{"rotate"}, want: "rotate: expected TARGET, got no arguments; see authwatch rotate --help"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), exitUsage, tc.want)
			}
		})
	}
}

func TestConfigRejectsUnknownRotationPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "authwatch.yaml")
	doc := `remediation:
  targets:
    - name: tb
      on: [token-expired, token-expird]
      secret: {namespace: town, name: s, key: k}
      source: {command: {command: [/bin/true]}}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	want := `remediation.targets[0].on[1]: unknown policy "token-expird"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("loadConfig = %v, want an error containing %q", err, want)
	}
	if strings.Contains(err.Error(), "on[0]") {
		t.Errorf("the built-in policy token-expired was reported unknown: %v", err)
	}
}
