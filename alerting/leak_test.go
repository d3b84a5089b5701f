package alerting

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
	"github.com/authwatch/authwatch/rules"
)

func TestSecretsNeverLeak(t *testing.T) {
	const (
		jwt       = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0b3duLWJ1aWxkZXIifQ.c2lnbmF0dXJlLXNlY3JldA"
		apiToken  = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
		password  = "hunter2-but-longer"
		slackTok  = testToken
		hookKey   = testWebhookKey
		hookPath  = testHookSecret
		lineToken = "tok_live_abcdefghijklmnop"
	)
	secrets := []string{jwt, apiToken, password, slackTok, hookKey, hookPath, lineToken}

	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.Inject("chat.postMessage", slacktest.Fault{Status: 500}, slacktest.Fault{Error: "internal_error"})

	var mu sync.Mutex
	var bodies []string
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b)+fmt.Sprint(r.Header))
		n := len(bodies)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	hooks := httptest.NewServer(record)
	defer hooks.Close()

	cfg := Config{
		Slack:        slackConfig(t, srv),
		Alertmanager: &AlertmanagerConfig{URL: hooks.URL, RefreshInterval: time.Hour},
		Webhooks: []WebhookConfig{
			{Name: "ok", URL: hooks.URL + "/hook", SecretFile: writeFile(t, "key", hookKey), Events: []string{"opened", "updated", "resolved"}},
			// An unreachable receiver makes the error path log.
			{Name: "down", URL: "http://127.0.0.1:1/hook", SecretFile: writeFile(t, "key2", hookKey), MaxAttempts: 2},
		},
	}
	cfg.Slack.Links = []Link{{Text: "Logs", URL: "https://logs.example/?w={{.Workload | urlquery}}"}}
	h := newHarness(t, cfg)
	h.start(t)

	// The engine runs with an identity mask, so only the alerting
	// redaction keeps these secrets from the receivers.
	eng, err := incident.New(incident.Options{Config: incident.DefaultConfig(), Mask: func(b []byte) []byte { return b }})
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{
		"GET /api/orders Authorization: Bearer " + jwt + " -> 401",
		"login failed: Token " + apiToken + " rejected, token expired",
		`{"level":"error","msg":"auth failed","password":"` + password + `","access_token":"` + lineToken + `"}`,
		"slack call failed with " + slackTok,
		"POST " + "https://hooks.slack.com/services/T000/B000/" + hookPath + " 401 secret=" + hookKey,
	}
	openedID := ""
	for i, text := range lines {
		m := &rules.Match{RuleID: "leak", Category: rules.TokenExpired, Severity: rules.SeverityError,
			Line: rules.Line{Text: []byte(text), Time: t0, Source: rules.Source{Namespace: "shop", Pod: "api-1", Container: "app", Workload: "Deployment/api"}}}
		events := eng.Observe(m, t0.Add(time.Duration(i)*time.Second))
		for _, ev := range events {
			if ev.Transition == incident.Opened && openedID == "" {
				openedID = ev.Incident.ID
			}
		}
		h.d.Notify(events...)
	}
	h.d.Notify(eng.Tick(t0.Add(10 * time.Second))...)
	// Notes, such as rotation steps, pass the same redaction, both as a
	// reply in the incident's thread and as a message of their own.
	if openedID == "" {
		t.Fatal("no incident opened to attach a note to")
	}
	h.d.Note(Note{Incident: openedID, Group: "rot-leak", Text: "obtain done: got Bearer " + jwt + " for " + slackTok})
	h.d.Note(Note{Group: "rot-manual", Title: "rotation with token=" + apiToken, Text: "patch failed: password=" + password + " access_token=" + lineToken, Last: true})
	h.d.Notify(eng.Tick(t0.Add(10 * time.Minute))...)
	waitFor(t, "deliveries", 30*time.Second, func() bool {
		return h.d.Idle() && len(srv.Messages()) >= 4
	})

	preview, err := h.d.Preview(incident.Event{Transition: incident.Resolved, Incident: sampleWithText(lines)})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	outputs := map[string]string{
		"slack":    strings.Join(srv.Requests(), "\n"),
		"receiver": strings.Join(bodies, "\n"),
		"logs":     h.logs.String(),
		"metrics":  gatherText(t, h),
		"preview":  string(preview),
	}
	mu.Unlock()
	for where, out := range outputs {
		if out == "" && where != "logs" {
			t.Errorf("%s: nothing recorded, so the check proves nothing", where)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s contains secret %q", where, s)
			}
		}
	}
	if !strings.Contains(outputs["slack"], "Bearer ****") {
		t.Errorf("slack text lacks the masked bearer token; got:\n%.2000s", outputs["slack"])
	}
	for _, note := range []string{"obtain done: got Bearer ****", "patch failed: password=****"} {
		if !strings.Contains(outputs["slack"], note) {
			t.Errorf("slack requests lack the masked note %q", note)
		}
	}
	if !strings.Contains(outputs["logs"], "notification failed") {
		t.Errorf("error path did not log; logs:\n%s", outputs["logs"])
	}
}

func sampleWithText(lines []string) incident.Incident {
	in := sampleIncident("shop", "Deployment/api", len(lines))
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	in.First.Text = lines[0]
	in.Latest.Text = strings.Join(lines, " | ")
	return in
}

func gatherText(t *testing.T, h *harness) string {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		fmt.Fprintln(&b, mf.String())
	}
	return b.String()
}
