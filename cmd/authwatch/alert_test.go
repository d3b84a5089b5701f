package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/checkpoint"
	"github.com/authwatch/authwatch/internal/slacktest"
	"github.com/authwatch/authwatch/rules"
)

func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAlertPreviewBlocks(t *testing.T) {
	for _, event := range []string{"opened", "updated", "resolved"} {
		t.Run(event, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{"alert", "preview", "--event", event}, nil, &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var msgs []struct {
				Text   string          `json:"text"`
				Blocks json.RawMessage `json:"blocks"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &msgs); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
			}
			if len(msgs) == 0 {
				t.Fatal("no message")
			}
			for _, m := range msgs {
				if err := slacktest.CheckBlocks(m.Blocks); err != nil {
					t.Errorf("blocks violate Slack limits: %v", err)
				}
			}
			if strings.Contains(stdout.String(), "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjB9") {
				t.Error("preview shows the sample bearer token unmasked")
			}
		})
	}
	var stderr bytes.Buffer
	if code := run([]string{"alert", "preview", "--event", "exploded"}, nil, io.Discard, &stderr); code != exitUsage || !strings.Contains(stderr.String(), `invalid --event "exploded"`) {
		t.Errorf("bad event: exit %d, %q", code, stderr.String())
	}
}

func TestAlertTestDelivers(t *testing.T) {
	srv := slacktest.New("xoxb-cmd-test-token", "hooksecret", "alerts")
	defer srv.Close()
	var mu sync.Mutex
	var hooks []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hooks = append(hooks, r.Header.Get(alerting.HeaderEvent))
		mu.Unlock()
	}))
	defer hook.Close()
	dir := t.TempDir()
	cfg := writeTestFile(t, dir, "config.yaml", `
alerting:
  slack:
    token_file: `+writeTestFile(t, dir, "token", "xoxb-cmd-test-token\n")+`
    channel: "#alerts"
    api_url: `+srv.APIURL()+`
    message_interval: 1ms
  webhooks:
    - name: hook
      url: `+hook.URL+`
      secret_file: `+writeTestFile(t, dir, "key", "k3y-k3y-k3y")+`
`)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"alert", "test", "--config", cfg, "--timeout", "20s"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	if got := len(srv.Messages()); got != 2 {
		t.Errorf("slack messages = %d, want parent and resolve reply", got)
	}
	mu.Lock()
	if strings.Join(hooks, ",") != "opened,resolved" {
		t.Errorf("webhook events = %v", hooks)
	}
	mu.Unlock()
	for _, want := range []string{"slack:#alerts", "webhook:hook", "ok"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}

	srv.SetAuth(false)
	stdout.Reset()
	if code := run([]string{"alert", "test", "--config", cfg, "--timeout", "20s"}, nil, &stdout, &stderr); code != 1 {
		t.Errorf("revoked token: exit %d, want 1\n%s", code, stdout.String())
	}
	if !strings.Contains(stdout.String(), "invalid_auth") || strings.Contains(stdout.String()+stderr.String(), "xoxb-cmd-test-token") {
		t.Errorf("output = %s", stdout.String())
	}
}

func TestIncidentStageReload(t *testing.T) {
	dir := t.TempDir()
	path := writeTestFile(t, dir, "config.yaml", `
policies:
  - name: auth-failures
    select: {categories: [auth_failure]}
    threshold: 3
    window: 1m
    resolve_after: 5m
  - name: token-expired
    select: {categories: [token_expired]}
    threshold: 1
    window: 1m
    resolve_after: 5m
`)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	stage, err := newIncidentStage(slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := func(cat rules.Category, workload string) *rules.Match {
		return &rules.Match{RuleID: "r", Category: cat, Severity: rules.SeverityError,
			Line: rules.Line{Text: []byte("401"), Time: time.Now(), Source: rules.Source{Namespace: "ns", Pod: "p", Workload: workload}}}
	}
	stage.HandleMatch(m(rules.TokenExpired, "Deployment/a"))
	stage.HandleMatch(m(rules.AuthFailure, "Deployment/b"))
	stage.HandleMatch(m(rules.AuthFailure, "Deployment/b"))
	openBefore := stage.engine.Open()
	if len(openBefore) != 1 {
		t.Fatalf("open before reload = %d, want 1", len(openBefore))
	}

	writeTestFile(t, dir, "config.yaml", `
policies:
  - name: auth-failures
    select: {categories: [auth_failure]}
    threshold: 3
    window: 0s
    resolve_after: 5m
`)
	_, err = loadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "policies[0].window: invalid value 0s") {
		t.Fatalf("invalid reload error = %v, want the YAML path policies[0].window", err)
	}

	writeTestFile(t, dir, "config.yaml", `
policies:
  - name: auth-failures
    select: {categories: [auth_failure]}
    threshold: 3
    window: 2m
    resolve_after: 10m
  - name: token-expired
    select: {categories: [token_expired]}
    threshold: 1
    window: 1m
    resolve_after: 5m
storm: {workloads: 20, window: 1m}
`)
	cfg2, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := stage.reload(t.Context(), cfg2); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "alerting reconfigured") {
		t.Error("reload without alerting changes rebuilt the notifiers")
	}
	cfg3 := cfg2
	cfg3.Alerting.Webhooks = []alerting.WebhookConfig{{URL: "https://hooks.example/x", SecretEnv: "AUTHWATCH_TEST_MISSING_KEY"}}
	if err := stage.reload(t.Context(), cfg3); err == nil || !strings.Contains(err.Error(), "alerting.webhooks[0].secret_env") {
		t.Errorf("reload with a missing webhook key = %v, want an error naming alerting.webhooks[0].secret_env", err)
	}
	t.Setenv("AUTHWATCH_TEST_MISSING_KEY", "k3y")
	if err := stage.reload(t.Context(), cfg3); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(stage.notify.Channels(), ","); got != "webhook:webhook-0" {
		t.Errorf("channels after reload = %q, want the new webhook", got)
	}
	openAfter := stage.engine.Open()
	if len(openAfter) != 1 || openAfter[0].ID != openBefore[0].ID {
		t.Errorf("open incidents after reload = %+v, want the same incident", openAfter)
	}
	// b's window kept its two matches: one more opens it.
	stage.HandleMatch(m(rules.AuthFailure, "Deployment/b"))
	if n := len(stage.engine.Open()); n != 2 {
		t.Errorf("open after third match = %d, want 2 (window survived the reload)", n)
	}
}

func TestConfigAlertingErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	path := writeTestFile(t, dir, "config.yaml", `
alerting:
  slack:
    channel: "#alerts"
  webhooks:
    - url: ftp://example
      secret_env: KEY
      events: [opened, exploded]
`)
	_, err := loadConfig(path)
	if err == nil {
		t.Fatal("invalid alerting section accepted")
	}
	for _, want := range []string{
		"alerting.slack: missing credential",
		`alerting.webhooks[0].url: invalid URL "ftp://example"`,
		`alerting.webhooks[0].events[1]: unknown event "exploded"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func newTestStore(t *testing.T, client *fake.Clientset) *checkpoint.Store {
	t.Helper()
	store, err := checkpoint.New(checkpoint.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
		Client: client, Namespace: "authwatch", Name: "authwatch-checkpoint",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	return store
}

func TestIncidentStageCheckpointRoundTrip(t *testing.T) {
	client := fake.NewClientset()
	cfg := defaultConfig()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := newIncidentStage(logger, prometheus.NewRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	store := newTestStore(t, client)
	if err := first.restore(store); err != nil {
		t.Fatal(err)
	}
	// Random, incompressible samples push the full section over the
	// budget, so the compact form is what gets written.
	big := make([]byte, 1500)
	for i := range 300 {
		_, _ = rand.Read(big)
		first.HandleMatch(&rules.Match{RuleID: "r", Category: rules.TokenExpired, Severity: rules.SeverityError,
			Line: rules.Line{Text: []byte(hex.EncodeToString(big)), Time: time.Now(),
				Source: rules.Source{Namespace: "ns", Pod: "p", Workload: "Deployment/w" + strconv.Itoa(i)}}})
	}
	if err := store.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	cm, err := client.CoreV1().ConfigMaps("authwatch").Get(t.Context(), "authwatch-checkpoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{checkpointIncidentSection, checkpointAlertingSection} {
		if n := len(cm.BinaryData[section]); n == 0 || n > checkpointSectionBudget {
			t.Errorf("section %s = %d bytes, want 1..%d", section, n, checkpointSectionBudget)
		}
	}

	second, err := newIncidentStage(logger, prometheus.NewRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.restore(newTestStore(t, client)); err != nil {
		t.Fatal(err)
	}
	before, after := first.engine.Open(), second.engine.Open()
	if len(after) != len(before) || len(after) != 300+1 {
		t.Fatalf("open after restore = %d, want %d (300 incidents and a storm summary)", len(after), len(before))
	}
	for i := range before {
		if before[i].ID != after[i].ID || before[i].Count != after[i].Count {
			t.Errorf("incident %d: before %s/%d, after %s/%d", i, before[i].ID, before[i].Count, after[i].ID, after[i].Count)
		}
	}
	if after[0].First.Text != "" {
		t.Errorf("restored sample = %.40q…, want it dropped by the compact form", after[0].First.Text)
	}
	// The restored engine does not open them again.
	var opened int
	second.subscribe(func(evs []incident.Event) {
		for _, ev := range evs {
			if ev.Transition == incident.Opened {
				opened++
			}
		}
	})
	second.HandleMatch(&rules.Match{RuleID: "r", Category: rules.TokenExpired, Severity: rules.SeverityError,
		Line: rules.Line{Text: []byte("expired"), Time: time.Now(), Source: rules.Source{Namespace: "ns", Pod: "p", Workload: "Deployment/w7"}}})
	if opened != 0 {
		t.Errorf("restored incident opened again: %d opened events", opened)
	}
}

func TestIncidentStageLogsUpdatesAtDebug(t *testing.T) {
	var logs bytes.Buffer
	stage, err := newIncidentStage(slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry(), defaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	in := incident.Incident{ID: "i1", Key: incident.Key{Policy: "auth-failures", Namespace: "ns", Workload: "Deployment/a"}, Count: 5}
	now := time.Now()
	stage.emit([]incident.Event{
		{Transition: incident.Opened, Incident: in, Time: now},
		{Transition: incident.Updated, Incident: in, Time: now.Add(time.Second)},
		{Transition: incident.Updated, Incident: in, Time: now.Add(2 * time.Second)},
		{Transition: incident.Resolved, Incident: in, Time: now.Add(time.Minute)},
	})
	for _, want := range []string{"transition=opened", "transition=resolved"} {
		if got := strings.Count(logs.String(), want); got != 1 {
			t.Errorf("%d info records with %s, want 1:\n%s", got, want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "transition=updated") {
		t.Errorf("an update was logged at info level:\n%s", logs.String())
	}
}
