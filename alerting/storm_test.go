package alerting

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
	"github.com/authwatch/authwatch/rules"
)

func TestSlackStormThousandMatches(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	srv.SetBurst(8)
	srv.Inject("chat.postMessage", slacktest.Fault{Status: 429}, slacktest.Fault{Status: 500}, slacktest.Fault{Error: "ratelimited"})
	srv.Inject("chat.update", slacktest.Fault{Status: 502})
	h := newHarness(t, Config{Slack: slackConfig(t, srv)})
	eng, err := incident.New(incident.Options{Config: incident.DefaultConfig(), Mask: func(b []byte) []byte { return b }})
	if err != nil {
		t.Fatal(err)
	}
	h.start(t)

	// 1,000 matches across 50 workloads within 10 seconds of engine time,
	// ticking once per second as the daemon does.
	const workloads, matches = 50, 1000
	opened := map[string]bool{}
	for i := range matches {
		now := t0.Add(time.Duration(i) * 10 * time.Second / matches)
		w := fmt.Sprintf("Deployment/svc-%02d", i%workloads)
		m := &rules.Match{RuleID: "http-401", Category: rules.AuthFailure, Severity: rules.SeverityError,
			Line: rules.Line{Text: []byte("GET /x -> 401"), Time: now, Source: rules.Source{Namespace: "prod", Pod: w[11:] + "-pod", Container: "app", Workload: w}}}
		events := eng.Observe(m, now)
		if i%100 == 99 {
			events = append(events, eng.Tick(now)...)
		}
		for _, ev := range events {
			if ev.Transition == incident.Opened {
				opened[ev.Incident.Key.Workload] = true
			}
		}
		h.d.Notify(events...)
	}
	if len(opened) != workloads+1 {
		t.Fatalf("opened incidents = %d, want %d workloads plus the storm", len(opened), workloads)
	}
	h.d.Notify(eng.Tick(t0.Add(10*time.Second + 5*time.Minute))...)
	if open := eng.Open(); len(open) != 0 {
		t.Fatalf("open after quiet period = %d", len(open))
	}

	waitFor(t, "every message delivered", 60*time.Second, func() bool {
		return h.d.Idle() && countResolvedParents(srv.Messages()) == 11
	})

	msgs := srv.Messages()
	parents := map[string]slacktest.Message{}
	perWorkload := map[string]int{}
	for _, m := range msgs {
		if m.ThreadTS != "" {
			continue
		}
		parents[m.TS] = m
		for i := range workloads {
			if strings.Contains(m.Text, fmt.Sprintf("Deployment/svc-%02d:", i)) {
				perWorkload[fmt.Sprint(i)]++
			}
		}
	}
	if len(parents) != 11 {
		t.Errorf("parent messages = %d, want 11 (10 incidents before the storm guard, 1 storm summary)", len(parents))
	}
	for w, n := range perWorkload {
		if n > 1 {
			t.Errorf("workload %s has %d parent messages", w, n)
		}
	}
	resolves := map[string]int{}
	for _, m := range msgs {
		if m.ThreadTS == "" {
			continue
		}
		if _, ok := parents[m.ThreadTS]; !ok {
			t.Errorf("reply %q threads under unknown parent %s", m.Text, m.ThreadTS)
		}
		if strings.Contains(m.Text, "Resolved") {
			resolves[m.ThreadTS]++
		}
	}
	for ts, p := range parents {
		if resolves[ts] != 1 {
			t.Errorf("parent %q has %d resolve replies, want 1", p.Text, resolves[ts])
		}
		if p.Edits != 1 {
			t.Errorf("parent %q edited %d times, want 1", p.Text, p.Edits)
		}
	}
	storm := 0
	for _, p := range parents {
		if strings.Contains(p.Text, "Storm") {
			storm++
			if !bytes.Contains(p.Blocks, []byte("svc-49")) {
				t.Errorf("storm summary does not list the last workload")
			}
		}
	}
	// Every workload is named in its own parent or in the storm summary.
	for i := range workloads {
		name := []byte(fmt.Sprintf("Deployment/svc-%02d", i))
		found := false
		for _, p := range parents {
			found = found || bytes.Contains(p.Blocks, name)
		}
		if !found {
			t.Errorf("%s is named in no parent message", name)
		}
	}
	if storm != 1 {
		t.Errorf("storm summaries = %d, want 1", storm)
	}
	if got := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("slack:#alerts", "failed")); got != 0 {
		t.Errorf("failed notifications = %v, want 0", got)
	}
	if got := testutil.ToFloat64(h.d.metrics.failures.WithLabelValues("slack:#alerts", "rate_limited")); got < 2 {
		t.Errorf("rate_limited failures = %v, want the injected ones at least", got)
	}
	if n := srv.InvalidBlocks(); n != 0 {
		t.Errorf("invalid_blocks = %d", n)
	}
	t.Logf("%d Slack messages, %d postMessage calls, %d update calls", len(msgs), srv.Calls("chat.postMessage"), srv.Calls("chat.update"))
}

func countResolvedParents(msgs []slacktest.Message) int {
	n := 0
	for _, m := range msgs {
		if m.ThreadTS == "" && m.Edits > 0 {
			n++
		}
	}
	return n
}
