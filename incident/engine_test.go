package incident

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/rules"
)

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func testMask(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("s3cr3t"), []byte("****"))
}

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(Options{Config: cfg, Mask: testMask})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func match(cat rules.Category, ns, workload, text string) *rules.Match {
	return &rules.Match{
		RuleID:   "test-rule",
		Category: cat,
		Severity: rules.SeverityError,
		Line: rules.Line{
			Text:   []byte(text),
			Time:   t0,
			Source: rules.Source{Namespace: ns, Pod: strings.ToLower(strings.TrimPrefix(workload, "Deployment/")) + "-abc", Container: "app", Workload: workload},
		},
	}
}

func transitions(events []Event) []string {
	var out []string
	for _, ev := range events {
		out = append(out, ev.Transition.String()+" "+ev.Incident.Key.String())
	}
	return out
}

func TestEngineThresholdOpensOnce(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	var got []string
	for i := range 7 {
		got = append(got, transitions(e.Observe(match(rules.AuthFailure, "shop", "Deployment/api", "HTTP 401"), t0.Add(time.Duration(i)*time.Second)))...)
	}
	want := []string{"opened auth-failures shop/Deployment/api"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	open := e.Open()
	if len(open) != 1 || open[0].Count != 7 {
		t.Fatalf("open incidents = %+v, want one with count 7", open)
	}
}

func TestEngineBelowThresholdExpires(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	for i := range 4 {
		// 4 matches, 20s apart: never 5 within 1m.
		if ev := e.Observe(match(rules.AuthFailure, "shop", "Deployment/api", "401"), t0.Add(time.Duration(i)*20*time.Second)); len(ev) != 0 {
			t.Fatalf("unexpected events %v", transitions(ev))
		}
	}
	e.Observe(match(rules.AuthFailure, "shop", "Deployment/api", "401"), t0.Add(100*time.Second))
	if ev := e.Tick(t0.Add(10 * time.Minute)); len(ev) != 0 {
		t.Fatalf("tick events = %v, want none", transitions(ev))
	}
	if n := len(e.Export().Tracks); n != 0 {
		t.Errorf("tracks after window = %d, want 0", n)
	}
}

func TestEngineTokenExpiredOpensAtOnce(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	got := transitions(e.Observe(match(rules.TokenExpired, "shop", "Deployment/api", "token expired"), t0))
	want := []string{"opened token-expired shop/Deployment/api"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestEngineUpdateAndResolve(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	m := match(rules.TokenExpired, "shop", "Deployment/api", "token s3cr3t expired")
	opened := e.Observe(m, t0)
	if len(opened) != 1 {
		t.Fatalf("opened = %v", transitions(opened))
	}
	if got := opened[0].Incident.First.Text; got != "token **** expired" {
		t.Errorf("sample text = %q, want masked", got)
	}
	if ev := e.Tick(t0.Add(time.Second)); len(ev) != 0 {
		t.Errorf("tick without new matches = %v, want none", transitions(ev))
	}
	e.Observe(m, t0.Add(2*time.Second))
	ev := e.Tick(t0.Add(3 * time.Second))
	if diff := cmp.Diff([]string{"updated token-expired shop/Deployment/api"}, transitions(ev)); diff != "" {
		t.Fatalf("tick (-want +got):\n%s", diff)
	}
	if ev[0].Incident.Count != 2 || ev[0].Incident.ID != opened[0].Incident.ID {
		t.Errorf("updated incident = %+v", ev[0].Incident)
	}
	if ev := e.Tick(t0.Add(2*time.Second + 5*time.Minute - time.Millisecond)); len(ev) != 0 {
		t.Errorf("tick before resolve_after = %v", transitions(ev))
	}
	ev = e.Tick(t0.Add(2*time.Second + 5*time.Minute))
	if diff := cmp.Diff([]string{"resolved token-expired shop/Deployment/api"}, transitions(ev)); diff != "" {
		t.Fatalf("tick (-want +got):\n%s", diff)
	}
	again := e.Observe(m, t0.Add(10*time.Minute))
	if len(again) != 1 || again[0].Incident.ID == opened[0].Incident.ID {
		t.Errorf("reopen = %+v, want a new incident id", again)
	}
}

func TestEnginePendingFor(t *testing.T) {
	cfg := Config{Policies: []Policy{{Name: "p", Threshold: 1, Window: time.Minute, For: 30 * time.Second, ResolveAfter: time.Minute}}}
	e := newEngine(t, cfg)
	m := match(rules.AuthFailure, "ns", "Deployment/a", "401")
	if ev := e.Observe(m, t0); len(ev) != 0 {
		t.Fatalf("observe = %v, want pending only", transitions(ev))
	}
	e.Observe(m, t0.Add(20*time.Second))
	if ev := e.Tick(t0.Add(29 * time.Second)); len(ev) != 0 {
		t.Fatalf("tick before for = %v", transitions(ev))
	}
	ev := e.Tick(t0.Add(30 * time.Second))
	if diff := cmp.Diff([]string{"opened p ns/Deployment/a"}, transitions(ev)); diff != "" {
		t.Fatalf("tick (-want +got):\n%s", diff)
	}

	// A pending incident whose matches leave the window lapses.
	e2 := newEngine(t, cfg)
	e2.Observe(m, t0)
	if ev := e2.Tick(t0.Add(61 * time.Second)); len(ev) != 0 {
		t.Fatalf("lapsed pending = %v, want no event", transitions(ev))
	}
}

func TestEngineStormFolds(t *testing.T) {
	cfg := DefaultConfig()
	e := newEngine(t, cfg)
	var opened, folded, storms int
	for i := range 15 {
		for _, ev := range e.Observe(match(rules.TokenExpired, "ns", fmt.Sprintf("Deployment/w%02d", i), "expired"), t0.Add(time.Duration(i)*time.Second)) {
			switch {
			case ev.Incident.IsStorm():
				storms++
				if len(ev.Incident.Members) != 11 {
					t.Errorf("storm members = %d, want 11", len(ev.Incident.Members))
				}
			case ev.Incident.Folded:
				folded++
			default:
				opened++
			}
		}
	}
	if opened != 10 || folded != 5 || storms != 1 {
		t.Errorf("opened=%d folded=%d storms=%d, want 10, 5, 1", opened, folded, storms)
	}
	ev := e.Tick(t0.Add(20 * time.Second))
	if diff := cmp.Diff([]string{"updated storm /"}, transitions(ev)); diff != "" {
		t.Fatalf("tick (-want +got):\n%s", diff)
	}
	if n := len(ev[0].Incident.Members); n != 15 {
		t.Errorf("storm members after tick = %d, want 15", n)
	}
	ev = e.Tick(t0.Add(20*time.Second + 5*time.Minute))
	got := transitions(ev)
	if len(got) != 16 || got[15] != "resolved storm /" {
		t.Errorf("resolve tick = %v, want 15 resolves then the storm", got)
	}
}

func TestEngineExportImport(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	m := match(rules.AuthFailure, "ns", "Deployment/a", "401")
	for i := range 5 {
		e.Observe(m, t0.Add(time.Duration(i)*time.Second))
	}
	e.Observe(match(rules.AuthFailure, "ns", "Deployment/b", "401"), t0)
	raw, err := json.Marshal(e.Export())
	if err != nil {
		t.Fatal(err)
	}
	var snap Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		t.Fatal(err)
	}
	e2 := newEngine(t, DefaultConfig())
	if _, err := e2.Import(snap); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e.Open(), e2.Open()); diff != "" {
		t.Errorf("open after import (-want +got):\n%s", diff)
	}
	// The restored incident does not open again, and b's window survives:
	// four more matches make five.
	if ev := e2.Observe(m, t0.Add(6*time.Second)); len(ev) != 0 {
		t.Errorf("observe after import = %v, want none", transitions(ev))
	}
	var got []string
	for range 4 {
		got = append(got, transitions(e2.Observe(match(rules.AuthFailure, "ns", "Deployment/b", "401"), t0.Add(7*time.Second)))...)
	}
	if diff := cmp.Diff([]string{"opened auth-failures ns/Deployment/b"}, got); diff != "" {
		t.Errorf("window after import (-want +got):\n%s", diff)
	}
}

func TestEngineReconfigure(t *testing.T) {
	e := newEngine(t, DefaultConfig())
	e.Observe(match(rules.TokenExpired, "ns", "Deployment/a", "expired"), t0)
	for range 3 {
		e.Observe(match(rules.AuthFailure, "ns", "Deployment/b", "401"), t0)
	}

	bad := DefaultConfig()
	bad.Policies[1].Window = 0
	if _, err := e.Reconfigure(bad, t0); err == nil || !strings.Contains(err.Error(), "policies[1].window") {
		t.Fatalf("reconfigure error = %v, want one naming policies[1].window", err)
	}

	good := DefaultConfig()
	good.Policies[1].Threshold = 4
	good.Policies = append(good.Policies[:0:0], good.Policies[1:]...) // drop token-expired
	ev, err := e.Reconfigure(good, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"resolved token-expired ns/Deployment/a"}, transitions(ev)); diff != "" {
		t.Errorf("reconfigure events (-want +got):\n%s", diff)
	}
	// b kept its three matches: one more meets the new threshold of 4.
	got := transitions(e.Observe(match(rules.AuthFailure, "ns", "Deployment/b", "401"), t0.Add(2*time.Second)))
	if diff := cmp.Diff([]string{"opened auth-failures ns/Deployment/b"}, got); diff != "" {
		t.Errorf("after reload (-want +got):\n%s", diff)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown category", func(c *Config) { c.Policies[0].Select.Categories = []string{"auth"} }, `policies[0].select.categories[0]: unknown category "auth"`},
		{"bad severity", func(c *Config) { c.Policies[1].Select.MinSeverity = "loud" }, `policies[1].select.min_severity: unknown severity "loud"`},
		{"missing name", func(c *Config) { c.Policies[2].Name = "" }, "policies[2].name: missing"},
		{"duplicate", func(c *Config) { c.Policies[1].Name = "token-expired" }, `policies[1].name: duplicate policy name "token-expired"`},
		{"reserved", func(c *Config) { c.Policies[0].Name = "storm" }, `policies[0].name: "storm" is reserved`},
		{"bad pattern", func(c *Config) { c.Policies[0].Select.Workloads = []string{"Deployment/["} }, `policies[0].select.workloads[0]: invalid pattern "Deployment/["`},
		{"no resolve", func(c *Config) { c.Policies[0].ResolveAfter = 0 }, "policies[0].resolve_after: invalid value 0s"},
		{"storm window", func(c *Config) { c.Storm.Window = 0 }, "storm.window: invalid value 0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}

func TestSelectorFilters(t *testing.T) {
	p := Policy{Name: "p", Threshold: 1, Window: time.Minute, ResolveAfter: time.Minute, Select: Selector{
		Rules: []string{"r1"}, Namespaces: []string{"shop"}, Workloads: []string{"Deployment/api-*"}, MinSeverity: "error",
	}}
	if err := p.compile("policies[0]"); err != nil {
		t.Fatal(err)
	}
	base := rules.Match{RuleID: "r1", Category: rules.AuthFailure, Severity: rules.SeverityError,
		Line: rules.Line{Source: rules.Source{Namespace: "shop", Workload: "Deployment/api-v2"}}}
	if !p.Selects(&base) {
		t.Error("base match not selected")
	}
	for name, edit := range map[string]func(*rules.Match){
		"rule":      func(m *rules.Match) { m.RuleID = "r2" },
		"namespace": func(m *rules.Match) { m.Line.Source.Namespace = "dev" },
		"workload":  func(m *rules.Match) { m.Line.Source.Workload = "Deployment/web" },
		"severity":  func(m *rules.Match) { m.Severity = rules.Warning },
	} {
		m := base
		edit(&m)
		if p.Selects(&m) {
			t.Errorf("%s: selected, want not", name)
		}
	}
}

func TestEngineMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e, err := New(Options{Config: DefaultConfig(), Mask: testMask, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	e.Observe(match(rules.TokenExpired, "ns", "Deployment/a", "expired"), t0)
	want := `
# HELP authwatch_incidents_open Incidents that are firing, by policy.
# TYPE authwatch_incidents_open gauge
authwatch_incidents_open{policy="auth-failures"} 0
authwatch_incidents_open{policy="storm"} 0
authwatch_incidents_open{policy="token-expired"} 1
`
	if err := testutil.CollectAndCompare(reg, strings.NewReader(want), "authwatch_incidents_open"); err != nil {
		t.Error(err)
	}
	e.Tick(t0.Add(5 * time.Minute))
	if got := testutil.ToFloat64(e.openGauge.WithLabelValues("token-expired")); got != 0 {
		t.Errorf("open after resolve = %v, want 0", got)
	}
	if got := testutil.ToFloat64(e.transitions.WithLabelValues("token-expired", "resolved")); got != 1 {
		t.Errorf("resolved transitions = %v, want 1", got)
	}
}
