package alerting

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/internal/slacktest"
)

func TestMetricsLintAndStartAtZero(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	cfg := Config{
		Slack:        slackConfig(t, srv),
		Alertmanager: &AlertmanagerConfig{URL: "http://127.0.0.1:1", RefreshInterval: time.Minute},
		Webhooks:     []WebhookConfig{{Name: "hook", URL: "http://127.0.0.1:1", SecretFile: writeFile(t, "key", testWebhookKey)}},
	}
	h := newHarness(t, cfg)
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP authwatch_notifications_total Notifications by channel and result (sent, failed).
# TYPE authwatch_notifications_total counter
authwatch_notifications_total{channel="alertmanager",result="failed"} 0
authwatch_notifications_total{channel="alertmanager",result="sent"} 0
authwatch_notifications_total{channel="slack:#alerts",result="failed"} 0
authwatch_notifications_total{channel="slack:#alerts",result="sent"} 0
authwatch_notifications_total{channel="webhook:hook",result="failed"} 0
authwatch_notifications_total{channel="webhook:hook",result="sent"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "authwatch_notifications_total"); err != nil {
		t.Error(err)
	}
}

func TestSlackAuthMetricOnlyWithToken(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	h := newHarness(t, Config{Slack: &SlackConfig{WebhookURLFile: writeFile(t, "hook", srv.WebhookURL())}})
	if n, err := testutil.GatherAndCount(h.reg, "authwatch_slack_auth_ok"); err != nil || n != 0 {
		t.Errorf("authwatch_slack_auth_ok series = %d (%v), want none in webhook mode", n, err)
	}
}
