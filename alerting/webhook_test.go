package alerting

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/incident"
)

const testWebhookKey = "whsec-0123456789abcdef"

// hookReceiver records deliveries and replies with scripted statuses.
type hookReceiver struct {
	mu       sync.Mutex
	statuses []int
	got      []received
}

type received struct {
	header http.Header
	body   []byte
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, received{header: req.Header.Clone(), body: body})
	if len(r.statuses) > 0 {
		code := r.statuses[0]
		r.statuses = r.statuses[1:]
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(code)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func webhookHarness(t *testing.T, statuses ...int) (*harness, *hookReceiver) {
	t.Helper()
	rcv := &hookReceiver{statuses: statuses}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	h := newHarness(t, Config{Webhooks: []WebhookConfig{{
		Name: "remediate", URL: srv.URL + "/hook", SecretFile: writeFile(t, "key", testWebhookKey), MaxAttempts: 4,
	}}})
	h.start(t)
	return h, rcv
}

// verifyRecipe is the receiver recipe from the README, written without the
// package's Verify so the documented steps are what is tested.
func verifyRecipe(key string, header http.Header, body []byte) bool {
	var ts, sig string
	for part := range strings.SplitSeq(header.Get("Authwatch-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(sig), []byte(want))
}

func TestWebhookSignatureVerifies(t *testing.T) {
	h, rcv := webhookHarness(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "delivery", 30*time.Second, func() bool { return len(rcv.received()) == 1 })
	got := rcv.received()[0]

	if !verifyRecipe(testWebhookKey, got.header, got.body) {
		t.Error("documented recipe does not verify the signature")
	}
	if err := Verify([]byte(testWebhookKey), got.header.Get(HeaderSignature), got.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("Verify() = %v", err)
	}
	if err := Verify([]byte("wrong-key"), got.header.Get(HeaderSignature), got.body, time.Now(), 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(wrong key) = %v, want ErrBadSignature", err)
	}
	tampered := append([]byte(nil), got.body...)
	tampered[len(tampered)-2] = ' '
	if verifyRecipe(testWebhookKey, got.header, tampered) {
		t.Error("tampered body verifies")
	}
	if err := Verify([]byte(testWebhookKey), got.header.Get(HeaderSignature), got.body, time.Now().Add(time.Hour), 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(an hour later) = %v, want a replay rejection", err)
	}

	var doc Document
	if err := json.Unmarshal(got.body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != WebhookVersion || doc.Event != "opened" || doc.Incident.ID != in.ID || doc.Incident.Workload != "Deployment/api" {
		t.Errorf("document = %+v", doc)
	}
	if got.header.Get(HeaderDelivery) != doc.DeliveryID || doc.DeliveryID == "" {
		t.Errorf("delivery header %q, document %q", got.header.Get(HeaderDelivery), doc.DeliveryID)
	}
	if got.header.Get(HeaderEvent) != "opened" || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", got.header)
	}
}

func TestWebhookRetries(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int
		wantCalls int
		wantSent  float64
	}{
		{"5xx retried", []int{500, 502, 503}, 4, 1},
		{"408 retried", []int{408}, 2, 1},
		{"429 retried", []int{429, 429}, 3, 1},
		{"400 stops", []int{400}, 1, 0},
		{"401 stops", []int{401}, 1, 0},
		{"404 stops", []int{404}, 1, 0},
		{"attempts bounded", []int{500, 500, 500, 500, 500}, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, rcv := webhookHarness(t, tc.statuses...)
			h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
			waitFor(t, "queue drained", 30*time.Second, func() bool { return h.d.Idle() && len(rcv.received()) >= tc.wantCalls })
			got := rcv.received()
			if len(got) != tc.wantCalls {
				t.Errorf("attempts = %d, want %d", len(got), tc.wantCalls)
			}
			ids := map[string]bool{}
			for _, r := range got {
				ids[r.header.Get(HeaderDelivery)] = true
				if !verifyRecipe(testWebhookKey, r.header, r.body) {
					t.Error("retry signature does not verify")
				}
			}
			if len(ids) != 1 {
				t.Errorf("delivery ids across retries = %v, want one", ids)
			}
			if s := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("webhook:remediate", "sent")); s != tc.wantSent {
				t.Errorf("sent = %v, want %v", s, tc.wantSent)
			}
			if f := testutil.ToFloat64(h.d.metrics.notifications.WithLabelValues("webhook:remediate", "failed")); f != 1-tc.wantSent {
				t.Errorf("failed = %v, want %v", f, 1-tc.wantSent)
			}
		})
	}
}

func TestWebhookDeliveryIDsDistinct(t *testing.T) {
	h, rcv := webhookHarness(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	in.Count = 9
	h.d.Notify(incident.Event{Transition: incident.Updated, Incident: in, Time: t0})
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "two deliveries", 30*time.Second, func() bool { return h.d.Idle() && len(rcv.received()) == 2 })
	got := rcv.received()
	if got[0].header.Get(HeaderDelivery) == got[1].header.Get(HeaderDelivery) {
		t.Error("two deliveries share a delivery id")
	}
	if got[0].header.Get(HeaderEvent) != "opened" || got[1].header.Get(HeaderEvent) != "resolved" {
		t.Errorf("events = %q, %q; want opened, resolved (updated is off by default)", got[0].header.Get(HeaderEvent), got[1].header.Get(HeaderEvent))
	}
}

func TestWebhookMatchFilters(t *testing.T) {
	rcv := &hookReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	t.Setenv("AUTHWATCH_TEST_HOOK_KEY", testWebhookKey)
	h := newHarness(t, Config{Webhooks: []WebhookConfig{{
		URL: srv.URL, SecretEnv: "AUTHWATCH_TEST_HOOK_KEY", Match: Matcher{Namespaces: []string{"payments"}},
	}}})
	h.start(t)
	h.d.Notify(
		incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0},
		incident.Event{Transition: incident.Opened, Incident: sampleIncident("payments", "Deployment/pay", 5), Time: t0},
	)
	waitFor(t, "delivery", 30*time.Second, func() bool { return h.d.Idle() && len(rcv.received()) == 1 })
	var doc Document
	_ = json.Unmarshal(rcv.received()[0].body, &doc)
	if doc.Incident.Namespace != "payments" {
		t.Errorf("delivered namespace %q, want payments only", doc.Incident.Namespace)
	}
}

func TestWebhookUpdatesCoalesced(t *testing.T) {
	rcv := &hookReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	h := newHarness(t, Config{Webhooks: []WebhookConfig{{
		URL: srv.URL, SecretFile: writeFile(t, "key", testWebhookKey),
		Events: []string{"opened", "updated", "resolved"}, UpdateInterval: time.Minute,
	}}})
	h.start(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	for i := range 120 {
		in.Count++
		// One update a second for two minutes: updates at 1m and 2m go out.
		h.d.Notify(incident.Event{Transition: incident.Updated, Incident: in, Time: t0.Add(time.Duration(i+1) * time.Second)})
	}
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(3*time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: in.ResolvedAt})
	waitFor(t, "deliveries", 30*time.Second, func() bool { return h.d.Idle() && len(rcv.received()) >= 4 })
	var events []string
	for _, r := range rcv.received() {
		events = append(events, r.header.Get(HeaderEvent))
	}
	if got := strings.Join(events, ","); got != "opened,updated,updated,resolved" {
		t.Errorf("events = %s, want opened,updated,updated,resolved", got)
	}
}
