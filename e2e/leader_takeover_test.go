//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/internal/slacktest"
)

// TestLeaderTakeoverResumesLatestCheckpoint starts the standby before the
// leader opens an incident, so the checkpoint at the standby's start is
// empty. After the leader is killed the standby must resume from the
// checkpoint that the leader wrote last: it replies in the open Slack
// thread and posts no second parent message. Both replicas log with
// --log-format json, and every line they write, client-go's leader
// election messages included, must be JSON.
func TestLeaderTakeoverResumesLatestCheckpoint(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "takeover")

	const slackToken = "xoxb-e2e-takeover-slacktoken"
	slack := slacktest.New(slackToken, "e2ehooksecret", "auth-alerts")
	defer slack.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"detail":"Token is expired"}`, http.StatusUnauthorized)
	}))
	defer api.Close()

	dir := t.TempDir()
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
    resolve_after: 10m
alerting:
  slack:
    token_file: %s
    channel: "#auth-alerts"
    api_url: %s
    message_interval: 10ms
    update_interval: 1s
`, tokenFile, slack.APIURL())), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config=" + config, "-n", ns, "-l", "app=town-builder", "--log-format=json",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=" + ns, "--checkpoint-interval=1s",
		"--leader-election-lease=authwatch-leader", "--leader-election-namespace=" + ns,
		"--leader-election-lease-duration=4s", "--leader-election-renew-deadline=3s", "--leader-election-retry-period=500ms"}
	first := startAuthwatch(t, cluster.Kubeconfig(), args...)
	waitLeader(t, ns, first)
	second := startAuthwatch(t, cluster.Kubeconfig(), args...)
	waitReadyz(t, first, "ok: leading, Lease "+ns+"/authwatch-leader")
	waitReadyz(t, second, "ok: standby, waiting for the Lease "+ns+"/authwatch-leader")

	env := []corev1.EnvVar{{Name: "API_TOKEN", Value: "expired-token-value"}}
	dep := scriptDeployment(ns, "town-builder", 1, env,
		"auth url="+api.URL+"/api/towns/ env=API_TOKEN every=200ms fail="+quoteArg(expiredLine)+` ok="INFO town-builder: API accepted the token"`)
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 2*time.Minute, "the leader's Slack thread", func(context.Context) (bool, error) {
		p := parentMessages(slack)
		return len(p) == 1, fmt.Errorf("%d parent messages", len(p))
	})
	if err != nil {
		t.Fatal(err)
	}
	parent := parentMessages(slack)[0]
	err = harness.WaitFor(ctx, time.Minute, "the thread in the checkpoint", func(ctx context.Context) (bool, error) {
		section, err := checkpointSection(ctx, ns, "alerting")
		return err == nil && strings.Contains(section, `"ts":"`+parent.TS+`"`), fmt.Errorf("alerting section %.200q (%v)", section, err)
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	killedAt := len(slack.Messages())
	waitLeader(t, ns, second)

	// The workload keeps failing: the new leader's updates reply in the
	// thread that the old leader opened.
	err = harness.WaitFor(ctx, time.Minute, "a reply of the new leader in the old thread", func(context.Context) (bool, error) {
		msgs := slack.Messages()
		for _, m := range msgs[min(killedAt, len(msgs)):] {
			if m.ThreadTS == parent.TS {
				return true, nil
			}
		}
		return false, fmt.Errorf("%d messages since the takeover, none in thread %s", len(msgs)-killedAt, parent.TS)
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a window for a wrong second parent; nothing to wait for
	if p := parentMessages(slack); len(p) != 1 {
		t.Errorf("parent messages after the takeover = %d, want 1 (the new leader notified again): %+v", len(p), p)
	}

	for _, d := range []*daemon{first, second} {
		clientGo := 0
		for _, line := range strings.Split(strings.TrimSpace(d.output()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("replica pid %d wrote a line that is not JSON: %q", d.cmd.Process.Pid, line)
				continue
			}
			if rec["component"] == "client-go" {
				clientGo++
			}
		}
		if clientGo == 0 {
			t.Errorf("replica pid %d logged no client-go record, so the JSON check did not cover klog", d.cmd.Process.Pid)
		}
		checkNoTokenIn(t, "replica output", d.output(), slackToken, "expired-token-value")
	}
}

// waitLeader waits until d holds the leader Lease.
func waitLeader(t *testing.T, ns string, d *daemon) {
	t.Helper()
	err := harness.WaitFor(t.Context(), time.Minute, "replica leading", func(ctx context.Context) (bool, error) {
		pid, err := leaseHolderPID(ctx, ns, "authwatch-leader")
		return err == nil && pid == d.cmd.Process.Pid, fmt.Errorf("holder pid %d (%v), want %d", pid, err, d.cmd.Process.Pid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitReadyz waits until d's /readyz is 200 with a body that starts with
// want. A new leader is briefly unready while it reads the checkpoint and
// its informers sync.
func waitReadyz(t *testing.T, d *daemon, want string) {
	t.Helper()
	err := harness.WaitFor(t.Context(), 30*time.Second, "authwatch /readyz "+want, func(ctx context.Context) (bool, error) {
		body, code, err := d.get(ctx, "/readyz")
		return err == nil && code == http.StatusOK && strings.HasPrefix(body, want),
			fmt.Errorf("replica pid %d: HTTP %d %q (%v)", d.cmd.Process.Pid, code, body, err)
	})
	if err != nil {
		t.Error(err)
	}
}

// checkpointSection returns a section of the checkpoint ConfigMap,
// decompressed.
func checkpointSection(ctx context.Context, ns, name string) (string, error) {
	cm, err := cluster.Client().CoreV1().ConfigMaps(ns).Get(ctx, "authwatch-checkpoint", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	raw := cm.BinaryData[name]
	if len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return "", err
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return "", err
		}
	}
	return string(raw), nil
}
