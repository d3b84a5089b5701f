//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/internal/slacktest"
)

// TestAlertingSlackThreadOpensAndResolves runs authwatch against the real
// cluster with Slack pointed at a local stand-in. A workload that starts
// failing with 401 opens exactly one thread. Once its API accepts the
// token again, the thread gets resolve replies and the parent is edited.
// A signed webhook receives each opened and resolved incident once.
func TestAlertingSlackThreadOpensAndResolves(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "alerting")
	kubeconfig := applyDeployRBAC(t)

	const slackToken = "xoxb-e2e-0000-slacktoken"
	slack := slacktest.New(slackToken, "e2ehooksecret", "auth-alerts")
	defer slack.Close()

	// The API the workload calls: 401 until accept is set.
	var accept atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept.Load() {
			http.Error(w, `{"detail":"Token is expired"}`, http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer api.Close()

	// A signed webhook receiver next to Slack.
	const hookKey = "e2e-webhook-key-0123"
	var hookMu sync.Mutex
	var hookEvents []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := alerting.Verify([]byte(hookKey), r.Header.Get(alerting.HeaderSignature), body, time.Now(), time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var doc alerting.Document
		if err := json.Unmarshal(body, &doc); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hookMu.Lock()
		hookEvents = append(hookEvents, doc.Event+" "+doc.Incident.Policy+" "+doc.Incident.Namespace+"/"+doc.Incident.Workload)
		hookMu.Unlock()
	}))
	defer hook.Close()

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "hook-key")
	if err := os.WriteFile(keyFile, []byte(hookKey), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "slack-token")
	if err := os.WriteFile(tokenFile, []byte(slackToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "authwatch.yaml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`
policies:
  - name: token-expired
    select: {categories: [token_expired], min_severity: error}
    threshold: 1
    window: 1m
    resolve_after: 4s
  - name: auth-failures
    select: {categories: [auth_failure], min_severity: error}
    threshold: 5
    window: 1m
    resolve_after: 4s
alerting:
  slack:
    token_file: %s
    channel: "#auth-alerts"
    api_url: %s
    message_interval: 10ms
    update_interval: 1s
  webhooks:
    - name: e2e
      url: %s
      secret_file: %s
`, tokenFile, slack.APIURL(), hook.URL, keyFile)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d := startAuthwatch(t, kubeconfig, "--config="+config, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	env := []corev1.EnvVar{{Name: "API_TOKEN", Value: "expired-token-value"}}
	dep := scriptDeployment(ns, "town-builder", 1, env,
		"auth url="+api.URL+"/api/towns/ env=API_TOKEN every=200ms fail="+quoteArg(expiredLine)+` ok="INFO town-builder: API accepted the token"`,
		`emit count=0 every=200ms text="INFO town-builder: built house {seq}"`)
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	err = harness.WaitFor(ctx, 2*time.Minute, "a Slack thread for the failing workload", func(context.Context) (bool, error) {
		if !d.running() {
			return false, fmt.Errorf("%w: authwatch exited: %v", harness.ErrStopWaiting, d.waitErr)
		}
		p := parentMessages(slack)
		return len(p) > 0, fmt.Errorf("%d parent messages", len(p))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Keep failing a while: the thread may get updates, never a second
	// parent.
	time.Sleep(2 * time.Second)
	p := parentMessages(slack)
	if len(p) != 1 {
		t.Fatalf("parent messages while failing = %d, want 1: %+v", len(p), p)
	}
	parent := p[0]
	for _, want := range []string{"token-expired", ns + "/Deployment/town-builder"} {
		if !strings.Contains(parent.Text, want) {
			t.Errorf("parent text %q lacks %q", parent.Text, want)
		}
	}

	accept.Store(true)
	err = harness.WaitFor(ctx, 2*time.Minute, "the thread to resolve", func(context.Context) (bool, error) {
		for _, m := range slack.Messages() {
			if m.TS == parent.TS && m.Edits > 0 && strings.Contains(m.Text, "[resolved]") {
				return true, nil
			}
		}
		return false, fmt.Errorf("parent not edited yet; %d messages", len(slack.Messages()))
	})
	if err != nil {
		t.Fatal(err)
	}
	// The expired-token line is selected by both default policies; each
	// incident resolves with a reply of its own in the one thread.
	resolves := map[string]int{}
	for _, m := range slack.Messages() {
		if m.ThreadTS == "" && m.TS != parent.TS {
			t.Errorf("second parent message: %q", m.Text)
		}
		if m.ThreadTS == parent.TS && strings.Contains(m.Text, "Resolved") {
			_, policy, _ := strings.Cut(m.Text, "Resolved (")
			policy, _, _ = strings.Cut(policy, ")")
			resolves[policy]++
		}
	}
	if resolves["token-expired"] != 1 || resolves["auth-failures"] != 1 || len(resolves) != 2 {
		t.Errorf("resolve replies in the thread by policy = %v, want one each for token-expired and auth-failures", resolves)
	}
	for _, m := range slack.Requests() {
		if strings.Contains(m, slackToken) || strings.Contains(m, "expired-token-value") {
			t.Error("a Slack message carries a secret")
		}
	}

	want := []string{
		"opened token-expired " + ns + "/Deployment/town-builder",
		"opened auth-failures " + ns + "/Deployment/town-builder",
		"resolved token-expired " + ns + "/Deployment/town-builder",
		"resolved auth-failures " + ns + "/Deployment/town-builder",
	}
	err = harness.WaitFor(ctx, 30*time.Second, "signed webhook deliveries", func(context.Context) (bool, error) {
		hookMu.Lock()
		defer hookMu.Unlock()
		got := map[string]int{}
		for _, e := range hookEvents {
			got[e]++
		}
		for _, w := range want {
			if got[w] != 1 {
				return false, fmt.Errorf("webhook events %q, want each of %q once", hookEvents, want)
			}
		}
		return len(hookEvents) == len(want), fmt.Errorf("webhook events %q", hookEvents)
	})
	if err != nil {
		t.Error(err)
	}

	s, err := d.metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.sum("authwatch_incident_transitions_total", map[string]string{"policy": "token-expired", "transition": "resolved"}); got != 1 {
		t.Errorf("resolved transitions = %v, want 1", got)
	}
	if got := s.sum("authwatch_notifications_total", map[string]string{"channel": "slack:#auth-alerts", "result": "failed"}); got != 0 {
		t.Errorf("failed notifications = %v, want 0", got)
	}
	if got := s.sum("authwatch_slack_auth_ok", nil); got != 1 {
		t.Errorf("authwatch_slack_auth_ok = %v, want 1", got)
	}
}
