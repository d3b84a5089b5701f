// Package slacktest runs a local HTTP server that behaves like the parts
// of the Slack Web API that authwatch uses. It serves auth.test,
// chat.postMessage and chat.update with threads, and incoming webhooks.
// It enforces the Block Kit limits (rejecting with invalid_blocks) and
// per-channel rate limits, and injects faults. It is for tests only.
package slacktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Fault is one injected response, sent instead of the normal one.
type Fault struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// RetryAfter sets the Retry-After header when not empty.
	RetryAfter string
	// Error, when set, makes the response {"ok": false, "error": Error}.
	Error string
	// Delay holds the response back this long, to provoke client
	// timeouts; with no Status and no Error the request then gets its
	// normal response.
	Delay time.Duration
}

// Message is a message as the server stores it.
type Message struct {
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	Blocks   json.RawMessage
	Edits    int
}

// Server is a fake Slack. Create it with New; it is safe for concurrent
// use.
type Server struct {
	*httptest.Server
	// Token is the accepted bot token.
	Token string
	// HookPath is the path of the incoming webhook, which holds its
	// secret like a real one: /services/T000/B000/<secret>.
	HookPath string

	mu       sync.Mutex        // guards the fields below
	channels map[string]string // name ("#alerts" or "alerts") → ID
	messages []*Message
	faults   map[string][]Fault // by method
	calls    map[string]int
	invalid  int
	// burst limits posts per channel per second; 0 means no limit.
	burst    int
	window   map[string][]time.Time
	nextTS   int
	requests []string // every raw request body and header, for leak checks
	authOK   bool
}

// New starts a server with the given channel names.
func New(token, hookSecret string, channels ...string) *Server {
	s := &Server{
		Token:    token,
		HookPath: "/services/T000/B000/" + hookSecret,
		channels: map[string]string{},
		faults:   map[string][]Fault{},
		calls:    map[string]int{},
		window:   map[string][]time.Time{},
		authOK:   true,
	}
	for i, c := range channels {
		s.channels[strings.TrimPrefix(c, "#")] = fmt.Sprintf("C%04d", i+1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/auth.test", s.authTest)
	mux.HandleFunc("POST /api/chat.postMessage", s.postMessage)
	mux.HandleFunc("POST /api/chat.update", s.update)
	mux.HandleFunc("POST /services/", s.webhook)
	s.Server = httptest.NewServer(mux)
	return s
}

// APIURL returns the base URL to configure as the Slack API URL.
func (s *Server) APIURL() string { return s.URL + "/api/" }

// WebhookURL returns the incoming webhook URL.
func (s *Server) WebhookURL() string { return s.URL + s.HookPath }

// Inject queues faults for method ("chat.postMessage", "chat.update",
// "auth.test" or "webhook"), used in order for the next requests before
// normal service resumes.
func (s *Server) Inject(method string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = append(s.faults[method], faults...)
}

// SetBurst makes the server reply 429 with Retry-After: 1 to more than n
// posts per channel within one second, as Slack does for bursts.
func (s *Server) SetBurst(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.burst = n
}

// SetAuth makes auth.test and every call fail with invalid_auth when ok is
// false, as after a token revocation.
func (s *Server) SetAuth(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authOK = ok
}

// Messages returns copies of the stored messages in posting order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
	}
	return out
}

// Calls returns how many requests each method received, faults included.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// InvalidBlocks returns how many requests were rejected with invalid_blocks.
func (s *Server) InvalidBlocks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.invalid
}

// Requests returns the text and blocks of every message request received,
// faults included, for leak checks. Credentials are not recorded.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code string) {
	writeJSON(w, map[string]any{"ok": false, "error": code})
}

// begin counts the call, records the body and applies a queued fault or
// the auth check. It returns false when it has already written the response.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, method string, bearer bool) bool {
	_ = r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	s.requests = append(s.requests, r.Form.Get("text")+"\n"+r.Form.Get("blocks"))
	if q := s.faults[method]; len(q) > 0 {
		f := q[0]
		s.faults[method] = q[1:]
		if f.Delay > 0 {
			s.mu.Unlock()
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
			}
			s.mu.Lock()
			if f.Status == 0 && f.Error == "" {
				return r.Context().Err() == nil
			}
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Status != 0 && f.Status != http.StatusOK {
			w.WriteHeader(f.Status)
			_, _ = w.Write([]byte("<html>error</html>"))
			return false
		}
		fail(w, f.Error)
		return false
	}
	// Slack takes the token from the Authorization header or, as
	// slack-go sends it, from the form.
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = r.Form.Get("token")
	}
	if bearer && (token != s.Token || !s.authOK) {
		fail(w, "invalid_auth")
		return false
	}
	return true
}

func (s *Server) authTest(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, "auth.test", true) {
		return
	}
	writeJSON(w, map[string]any{"ok": true, "team": "Test Team", "user": "authwatch", "team_id": "T000", "user_id": "U000"})
}

func (s *Server) channelID(name string) (string, bool) {
	name = strings.TrimPrefix(name, "#")
	if id, ok := s.channels[name]; ok {
		return id, true
	}
	for _, id := range s.channels {
		if id == name {
			return id, true
		}
	}
	return "", false
}

func (s *Server) limited(w http.ResponseWriter, ch string) bool {
	if s.burst == 0 {
		return false
	}
	now := time.Now()
	recent := s.window[ch][:0]
	for _, t := range s.window[ch] {
		if now.Sub(t) < time.Second {
			recent = append(recent, t)
		}
	}
	s.window[ch] = append(recent, now)
	if len(s.window[ch]) > s.burst {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	return false
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, "chat.postMessage", true) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.channelID(r.Form.Get("channel"))
	if !ok {
		fail(w, "channel_not_found")
		return
	}
	if s.limited(w, id) {
		return
	}
	text, blocks := r.Form.Get("text"), r.Form.Get("blocks")
	if text == "" && blocks == "" {
		fail(w, "no_text")
		return
	}
	if err := CheckBlocks([]byte(blocks)); err != nil {
		s.invalid++
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_blocks", "errors": []string{err.Error()}})
		return
	}
	thread := r.Form.Get("thread_ts")
	if thread != "" && s.find(id, thread) == nil {
		fail(w, "thread_not_found")
		return
	}
	s.nextTS++
	m := &Message{Channel: id, TS: fmt.Sprintf("1700000000.%06d", s.nextTS), ThreadTS: thread, Text: text, Blocks: json.RawMessage(blocks)}
	s.messages = append(s.messages, m)
	writeJSON(w, map[string]any{"ok": true, "channel": id, "ts": m.TS})
}

func (s *Server) find(channel, ts string) *Message {
	for _, m := range s.messages {
		if m.Channel == channel && m.TS == ts {
			return m
		}
	}
	return nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, "chat.update", true) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := r.Form.Get("channel")
	if _, ok := s.channelID(ch); !ok {
		fail(w, "channel_not_found")
		return
	}
	if s.limited(w, ch) {
		return
	}
	if err := CheckBlocks([]byte(r.Form.Get("blocks"))); err != nil {
		s.invalid++
		fail(w, "invalid_blocks")
		return
	}
	m := s.find(ch, r.Form.Get("ts"))
	if m == nil {
		fail(w, "message_not_found")
		return
	}
	m.Text, m.Blocks = r.Form.Get("text"), json.RawMessage(r.Form.Get("blocks"))
	m.Edits++
	writeJSON(w, map[string]any{"ok": true, "channel": ch, "ts": m.TS, "text": m.Text})
}

// webhook serves the incoming webhook. Like Slack's, it responds with
// plain text and reports errors through HTTP status codes.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text   string          `json:"text"`
		Blocks json.RawMessage `json:"blocks"`
	}
	err := json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["webhook"]++
	raw, _ := json.Marshal(body)
	s.requests = append(s.requests, string(raw))
	if q := s.faults["webhook"]; len(q) > 0 {
		f := q[0]
		s.faults["webhook"] = q[1:]
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Error))
		return
	}
	if r.URL.Path != s.HookPath {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte("invalid_token"))
		return
	}
	if err != nil || (body.Text == "" && len(body.Blocks) == 0) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("invalid_payload"))
		return
	}
	if len(body.Blocks) > 0 {
		if err := CheckBlocks(body.Blocks); err != nil {
			s.invalid++
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("invalid_blocks"))
			return
		}
	}
	s.nextTS++
	s.messages = append(s.messages, &Message{Channel: "webhook", TS: strconv.Itoa(s.nextTS), Text: body.Text, Blocks: body.Blocks})
	_, _ = w.Write([]byte("ok"))
}

type textObj struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type block struct {
	Type     string            `json:"type"`
	Text     *textObj          `json:"text"`
	Fields   []textObj         `json:"fields"`
	Elements []json.RawMessage `json:"elements"`
}

type element struct {
	Type string   `json:"type"`
	Text *textObj `json:"text"`
	URL  string   `json:"url"`
}

// CheckBlocks applies the Block Kit limits that authwatch's messages can
// reach: 50 blocks, header text 150, section text 3000, 10 fields of 2000,
// 10 context elements, 25 buttons with text 75 and URL 3000 characters.
func CheckBlocks(raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	var blocks []block
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return fmt.Errorf("blocks are not a JSON array: %w", err)
	}
	if len(blocks) > 50 {
		return fmt.Errorf("%d blocks, max 50", len(blocks))
	}
	n := utf8.RuneCountInString
	for i, b := range blocks {
		switch b.Type {
		case "header":
			if b.Text == nil || b.Text.Type != "plain_text" || n(b.Text.Text) > 150 || b.Text.Text == "" {
				return fmt.Errorf("blocks[%d]: header text must be plain_text of 1-150 characters", i)
			}
		case "section":
			if b.Text == nil && len(b.Fields) == 0 {
				return fmt.Errorf("blocks[%d]: section needs text or fields", i)
			}
			if b.Text != nil && (n(b.Text.Text) > 3000 || b.Text.Text == "") {
				return fmt.Errorf("blocks[%d]: section text must have 1-3000 characters", i)
			}
			if len(b.Fields) > 10 {
				return fmt.Errorf("blocks[%d]: %d fields, max 10", i, len(b.Fields))
			}
			for j, f := range b.Fields {
				if n(f.Text) > 2000 || f.Text == "" {
					return fmt.Errorf("blocks[%d].fields[%d]: must have 1-2000 characters", i, j)
				}
			}
		case "context":
			if len(b.Elements) == 0 || len(b.Elements) > 10 {
				return fmt.Errorf("blocks[%d]: context needs 1-10 elements", i)
			}
		case "actions":
			if len(b.Elements) == 0 || len(b.Elements) > 25 {
				return fmt.Errorf("blocks[%d]: actions need 1-25 elements", i)
			}
			for j, raw := range b.Elements {
				var e element
				if err := json.Unmarshal(raw, &e); err != nil {
					return fmt.Errorf("blocks[%d].elements[%d]: %w", i, j, err)
				}
				if e.Text == nil || n(e.Text.Text) > 75 || len(e.URL) > 3000 {
					return fmt.Errorf("blocks[%d].elements[%d]: button text max 75, url max 3000", i, j)
				}
			}
		case "divider":
		default:
			return fmt.Errorf("blocks[%d]: unknown block type %q", i, b.Type)
		}
	}
	return nil
}
