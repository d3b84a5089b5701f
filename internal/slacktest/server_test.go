package slacktest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func blocksJSON(t *testing.T, blocks ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func text(kind, s string) map[string]any { return map[string]any{"type": kind, "text": s} }

func TestCheckBlocksLimits(t *testing.T) {
	section := func(s string) map[string]any { return map[string]any{"type": "section", "text": text("mrkdwn", s)} }
	many := make([]map[string]any, 51)
	for i := range many {
		many[i] = section("x")
	}
	fields := make([]map[string]any, 11)
	for i := range fields {
		fields[i] = text("mrkdwn", "f")
	}
	tests := []struct {
		name   string
		blocks []map[string]any
		want   string
	}{
		{"ok", []map[string]any{section("hello"), {"type": "header", "text": text("plain_text", "title")}}, ""},
		{"51 blocks", many, "51 blocks, max 50"},
		{"long header", []map[string]any{{"type": "header", "text": text("plain_text", strings.Repeat("h", 151))}}, "header text"},
		{"mrkdwn header", []map[string]any{{"type": "header", "text": text("mrkdwn", "h")}}, "header text"},
		{"long section", []map[string]any{section(strings.Repeat("s", 3001))}, "1-3000"},
		{"section at limit", []map[string]any{section(strings.Repeat("ü", 3000))}, ""},
		{"11 fields", []map[string]any{{"type": "section", "fields": fields}}, "11 fields"},
		{"empty section", []map[string]any{{"type": "section"}}, "needs text or fields"},
		{"long button", []map[string]any{{"type": "actions", "elements": []map[string]any{{"type": "button", "text": text("plain_text", strings.Repeat("b", 76)), "url": "https://x"}}}}, "button text"},
		{"unknown type", []map[string]any{{"type": "carousel"}}, "unknown block type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBlocks(blocksJSON(t, tc.blocks...))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckBlocks() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckBlocks() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestServerThreadsAndErrors(t *testing.T) {
	s := New("xoxb-test", "hook", "alerts")
	defer s.Close()
	post := func(method string, form url.Values) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.APIURL()+method, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer xoxb-test")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	parent := post("chat.postMessage", url.Values{"channel": {"#alerts"}, "text": {"hi"}})
	if parent["ok"] != true {
		t.Fatalf("post = %v", parent)
	}
	if r := post("chat.postMessage", url.Values{"channel": {"#nope"}, "text": {"x"}}); r["error"] != "channel_not_found" {
		t.Errorf("unknown channel = %v", r)
	}
	if r := post("chat.postMessage", url.Values{"channel": {"alerts"}, "text": {"x"}, "thread_ts": {"123.456"}}); r["error"] != "thread_not_found" {
		t.Errorf("unknown thread = %v", r)
	}
	if r := post("chat.postMessage", url.Values{"channel": {"C0001"}, "text": {"reply"}, "thread_ts": {parent["ts"].(string)}}); r["ok"] != true {
		t.Errorf("reply = %v", r)
	}
	if r := post("chat.update", url.Values{"channel": {"C0001"}, "ts": {"1.2"}, "text": {"x"}}); r["error"] != "message_not_found" {
		t.Errorf("update of unknown ts = %v", r)
	}
	s.SetAuth(false)
	if r := post("auth.test", nil); r["error"] != "invalid_auth" {
		t.Errorf("auth.test with revoked token = %v", r)
	}
}
