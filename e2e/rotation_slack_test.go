//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/internal/slacktest"
)

const rotationSlackToken = "xoxb-e2e-rotation-slacktoken"

// rotationSlack starts a Slack stand-in and returns it with the alerting
// section that points authwatch at it.
func rotationSlack(t *testing.T) (*slacktest.Server, string) {
	t.Helper()
	slack := slacktest.New(rotationSlackToken, "e2ehooksecret", "auth-alerts")
	t.Cleanup(slack.Close)
	tokenFile := filepath.Join(t.TempDir(), "slack-token")
	if err := os.WriteFile(tokenFile, []byte(rotationSlackToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	section := fmt.Sprintf(`alerting:
  slack:
    token_file: %s
    channel: "#auth-alerts"
    api_url: %s
    message_interval: 10ms
    update_interval: 1h
`, tokenFile, slack.APIURL())
	return slack, section
}

// parentMessages returns the messages that slack received outside any
// thread, which are the parents of the threads.
func parentMessages(slack *slacktest.Server) []slacktest.Message {
	var out []slacktest.Message
	for _, m := range slack.Messages() {
		if m.ThreadTS == "" {
			out = append(out, m)
		}
	}
	return out
}

// threadText returns the text of the replies to parent, one per line.
func threadText(slack *slacktest.Server, parent slacktest.Message) string {
	var b strings.Builder
	for _, m := range slack.Messages() {
		if m.ThreadTS == parent.TS {
			b.WriteString(m.Text + "\n")
		}
	}
	return b.String()
}

// TestRotationReportsInIncidentThread lets authwatch run rotate a broken
// token and checks that the rotation steps arrive as replies in the
// incident's Slack thread, with no token in any Slack request.
func TestRotationReportsInIncidentThread(t *testing.T) {
	ns := newNamespace(t, "rot-slack")
	api := startIribala(t, ns, 5*time.Minute)
	broken := api.brokenJWT(t)
	createRotationSecrets(t, api, broken)
	startClient(t, api, "Bearer", 1)
	slack, section := rotationSlack(t)
	d := startAuthwatch(t, cluster.Kubeconfig(), "--config="+rotationConfig(t, ns, false, httpSourceYAML(api), section),
		"--checkpoint-configmap=")

	waitRotations(t, []*daemon{d}, "succeeded", 1, 2*time.Minute)
	var parent slacktest.Message
	err := harness.WaitFor(t.Context(), time.Minute, "the rotation outcome in the incident thread", func(context.Context) (bool, error) {
		for _, m := range slack.Messages() {
			if m.ThreadTS == "" && strings.Contains(m.Text, "Deployment/"+townBuilder) {
				parent = m
				break
			}
		}
		if parent.TS == "" {
			return false, fmt.Errorf("no incident parent among %d messages", len(slack.Messages()))
		}
		replies := threadText(slack, parent)
		return strings.Contains(replies, rotTarget+" succeeded in"), fmt.Errorf("thread replies:\n%s", replies)
	})
	if err != nil {
		t.Fatal(err)
	}
	replies := threadText(slack, parent)
	for _, want := range []string{"preflight started", "obtain done", "patch done", "restart done", "rollout done", "verify done"} {
		if !strings.Contains(replies, want) {
			t.Errorf("incident thread lacks the step %q:\n%s", want, replies)
		}
	}
	for _, m := range slack.Messages() {
		if m.ThreadTS == "" && strings.Contains(m.Text, "Token rotation") {
			t.Errorf("rotation reported in a message of its own, want the incident thread: %q", m.Text)
		}
	}
	token := string(getTargetSecret(t, ns).Data[rotKey])
	checkNoTokenIn(t, "Slack requests", strings.Join(slack.Requests(), "\n"), broken, token, api.password, rotationSlackToken)
}

// TestRotationByHandReportsInOwnMessage runs `authwatch rotate` with Slack
// configured: the rotation reports in a new message of its own, its steps
// reply to it, and no token reaches Slack.
func TestRotationByHandReportsInOwnMessage(t *testing.T) {
	ns := newNamespace(t, "rot-cli-slack")
	api := startIribala(t, ns, 5*time.Minute)
	broken := api.brokenJWT(t)
	createRotationSecrets(t, api, broken)
	startClient(t, api, "Bearer", 1)
	slack, section := rotationSlack(t)
	config := rotationConfig(t, ns, false, httpSourceYAML(api), section)

	out, errOut, code := rotateCLI(t, rotTarget, "--config="+config)
	if code != 0 {
		t.Fatalf("rotate exited %d:\n%s%s", code, out, errOut)
	}
	// rotate waits for its Slack reports before it exits.
	var own []slacktest.Message
	for _, m := range slack.Messages() {
		if m.ThreadTS == "" {
			own = append(own, m)
		}
	}
	if len(own) != 1 || !strings.Contains(own[0].Text, "Token rotation") || !strings.Contains(own[0].Text, rotTarget+", run by hand") {
		t.Fatalf("new messages = %+v, want one headed by the manual rotation", own)
	}
	replies := own[0].Text + "\n" + threadText(slack, own[0])
	for _, want := range []string{"obtain done", "patch done", "verify done", rotTarget + " succeeded in"} {
		if !strings.Contains(replies, want) {
			t.Errorf("manual rotation messages lack %q:\n%s", want, replies)
		}
	}
	token := string(getTargetSecret(t, ns).Data[rotKey])
	checkNoTokenIn(t, "Slack requests", strings.Join(slack.Requests(), "\n"), broken, token, api.password, rotationSlackToken)
	checkNoTokenIn(t, "rotate output", out+errOut, broken, token, api.password, rotationSlackToken)
}
