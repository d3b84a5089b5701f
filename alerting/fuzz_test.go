package alerting

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

// FuzzSlackBlocksWithinLimits renders messages from arbitrary incident
// text and checks them against the Block Kit limits that Slack enforces,
// and that a bearer token in the sample never reaches the message.
func FuzzSlackBlocksWithinLimits(f *testing.F) {
	f.Add("shop", "Deployment/api", "api-1", "GET / -> 401", 5, 3)
	f.Add(strings.Repeat("n", 300), "Deployment/"+strings.Repeat("ü", 400), strings.Repeat("p", 500), strings.Repeat("```<&>", 1000), 1<<30, 60)
	f.Add("", "", "", "", 0, 0)
	f.Fuzz(func(t *testing.T, ns, workload, pod, text string, count, members int) {
		if len(ns)+len(workload)+len(pod)+len(text) > 1<<14 {
			return // longer inputs only slow the fuzzer; the seeds cover the cut
		}
		d := &Dispatcher{logger: slog.New(slog.DiscardHandler), redactor: &Redactor{}}
		n := &slackNotifier{d: d, logger: d.logger, redactor: d.redactor, once: &d.once}
		in := sampleIncident(ns, workload, count)
		in.Pods = []string{pod, pod + "x"}
		const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmdXp6In0.c2lnbmF0dXJl"
		in.First.Text = text + " Authorization: Bearer " + token
		in.Latest.Text = text
		in.Rules = map[string]int{text: count, pod: 1}
		d.redactIncident(&in)
		th := &Thread{ID: in.ID, Incidents: map[string]incident.Incident{in.ID: in}, Order: []string{in.ID}, Replied: map[string]int{}}
		for i := range min(max(members, 0), 20) {
			other := in
			other.ID = in.ID + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
			th.Incidents[other.ID] = other
			th.Order = append(th.Order, other.ID)
		}
		storm := incident.Incident{ID: "s", Key: incident.Key{Policy: incident.StormPolicy}, FiredAt: t0, ResolvedAt: t0.Add(time.Minute), Latest: in.Latest}
		for i := range min(max(members, 0), incident.MaxMembers) {
			storm.Members = append(storm.Members, incident.Key{Policy: text, Namespace: ns, Workload: workload + strings.Repeat("w", i)})
		}
		msgs := []message{
			n.threadMessage(th, false), n.threadMessage(th, true), n.updateMessage(th),
			n.joinMessage(&in), n.resolvedReply(&in), n.incidentMessage(&storm, false), n.incidentMessage(&storm, true),
		}
		for i, m := range msgs {
			raw, err := json.Marshal(slack.Blocks{BlockSet: m.Blocks})
			if err != nil {
				t.Fatal(err)
			}
			if err := slacktest.CheckBlocks(raw); err != nil && len(m.Blocks) > 0 {
				t.Errorf("message %d: %v", i, err)
			}
			if strings.Contains(string(raw)+m.Text, token) {
				t.Errorf("message %d carries the bearer token", i)
			}
		}
	})
}
