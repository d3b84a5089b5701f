package alerting

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/secret"
)

// Webhook request headers. The signature header reads
// "t=<unix seconds>,v1=<hex HMAC-SHA256>" where the MAC covers
// "<t>.<body>" under the webhook's key.
const (
	HeaderSignature = "Authwatch-Signature"
	HeaderDelivery  = "Authwatch-Delivery"
	HeaderEvent     = "Authwatch-Event"
	// WebhookVersion is the version of the Document format; it changes
	// only when a field changes meaning or goes away.
	WebhookVersion = "authwatch.incident.v1"
)

// Document is the JSON body of a webhook delivery.
type Document struct {
	Version string `json:"version"`
	// Event is opened, updated or resolved.
	Event string `json:"event"`
	// DeliveryID is the same for every retry of one delivery, so a
	// receiver can drop duplicates.
	DeliveryID string    `json:"delivery_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Incident   Payload   `json:"incident"`
}

// Payload is the incident inside a Document.
type Payload struct {
	ID            string            `json:"id"`
	Policy        string            `json:"policy"`
	Namespace     string            `json:"namespace"`
	Workload      string            `json:"workload"`
	State         string            `json:"state"`
	Category      string            `json:"category"`
	Severity      string            `json:"severity"`
	Count         int               `json:"count"`
	InWindow      int               `json:"in_window"`
	Threshold     int               `json:"threshold"`
	WindowSeconds float64           `json:"window_seconds"`
	Rules         map[string]int    `json:"rules"`
	Pods          []string          `json:"pods"`
	Containers    []string          `json:"containers"`
	FirstSample   incident.Sample   `json:"first_sample"`
	LatestSample  incident.Sample   `json:"latest_sample"`
	StartedAt     time.Time         `json:"started_at"`
	FiredAt       time.Time         `json:"fired_at,omitzero"`
	LastSeen      time.Time         `json:"last_seen"`
	ResolvedAt    time.Time         `json:"resolved_at,omitzero"`
	Folded        bool              `json:"folded"`
	StormID       string            `json:"storm_id,omitempty"`
	Members       []incident.Key    `json:"members,omitempty"`
	Labels        map[string]string `json:"labels"`
}

// Sign returns the Authwatch-Signature value for body sent at t.
func Sign(key []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// ErrBadSignature means a webhook signature did not verify.
var ErrBadSignature = errors.New("alerting: webhook signature does not verify")

// Verify checks an Authwatch-Signature header value against body and
// rejects signatures older than tolerance (replays), as a receiver does.
func Verify(key []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range bytes.SplitSeq([]byte(header), []byte(",")) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(part), []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "t":
			ts = string(v)
		case "v1":
			if sig, err := hex.DecodeString(string(v)); err == nil {
				sigs = append(sigs, sig)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %d is outside the %s tolerance", ErrBadSignature, sec, tolerance)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}

func newDeliveryID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func payloadOf(in *incident.Incident, r *Redactor) Payload {
	p := Payload{
		ID: in.ID, Policy: in.Key.Policy, Namespace: in.Key.Namespace, Workload: in.Key.Workload,
		State: in.State.String(), Category: in.Category, Severity: in.Severity,
		Count: in.Count, InWindow: in.InWindow, Threshold: in.Threshold, WindowSeconds: in.Window.Seconds(),
		Rules: in.Rules, Pods: in.Pods, Containers: in.Containers,
		FirstSample: in.First, LatestSample: in.Latest,
		StartedAt: in.StartedAt, FiredAt: in.FiredAt, LastSeen: in.LastSeen, ResolvedAt: in.ResolvedAt,
		Folded: in.Folded, StormID: in.StormID, Members: in.Members,
		Labels: labelsOf(in),
	}
	p.FirstSample.Text = r.String(p.FirstSample.Text)
	p.LatestSample.Text = r.String(p.LatestSample.Text)
	return p
}

func labelsOf(in *incident.Incident) map[string]string {
	return map[string]string{
		"alertname": "AuthwatchIncident",
		"policy":    in.Key.Policy,
		"namespace": in.Key.Namespace,
		"workload":  in.Key.Workload,
		"category":  in.Category,
		"severity":  in.Severity,
	}
}

// due reports whether ev goes out: every opened and resolved does, and an
// updated only UpdateInterval after the last delivery for its incident.
func (w *webhookNotifier) due(ev incident.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := ev.Incident.ID
	switch ev.Transition {
	case incident.Resolved:
		delete(w.lastUpdate, id)
		return true
	case incident.Updated:
		if last, ok := w.lastUpdate[id]; ok && ev.Time.Sub(last) < w.cfg.UpdateInterval {
			return false
		}
	}
	w.lastUpdate[id] = ev.Time
	return true
}

// delivery is one queued webhook request; Body is fixed at enqueue so
// retries resend the same bytes under the same delivery id.
type delivery struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Body  json.RawMessage `json:"body"`
	Since time.Time       `json:"since"`
}

type webhookNotifier struct {
	d      *Dispatcher
	cfg    WebhookConfig
	key    secret.Value
	http   *http.Client
	logger *slog.Logger
	label  string
	queue  *queue[delivery]

	mu         sync.Mutex           // guards lastUpdate
	lastUpdate map[string]time.Time // by incident ID, for coalescing updated
}

func newWebhookNotifier(d *Dispatcher, cfg WebhookConfig, at string, httpClient *http.Client) (*webhookNotifier, error) {
	key, err := loadSecret(at, "secret", cfg.SecretFile, cfg.SecretEnv)
	if err != nil {
		return nil, err
	}
	d.redactor.Add(key)
	label := "webhook:" + cfg.Name
	d.metrics.initChannel(label)
	return &webhookNotifier{
		d: d, cfg: cfg, key: key, http: httpClient, label: label,
		logger:     d.logger.With("notifier", "webhook", "webhook", cfg.Name),
		queue:      newQueue[delivery](func(l int) { d.metrics.queue.WithLabelValues(label).Set(float64(l)) }),
		lastUpdate: map[string]time.Time{},
	}, nil
}

func (w *webhookNotifier) handle(ev incident.Event) {
	if !slices.Contains(w.cfg.Events, ev.Transition.String()) || !w.cfg.Match.Matches(ev.Incident.Key) {
		return
	}
	if !w.due(ev) {
		return
	}
	doc := Document{
		Version:    WebhookVersion,
		Event:      ev.Transition.String(),
		DeliveryID: newDeliveryID(),
		OccurredAt: ev.Time.UTC(),
		Incident:   payloadOf(&ev.Incident, w.d.redactor),
	}
	body, err := json.Marshal(doc)
	if err != nil {
		// Every field is a plain value, so this is a programming error.
		w.d.metrics.notifications.WithLabelValues(w.label, "failed").Inc()
		w.logger.Error("webhook document not encoded", "incident", ev.Incident.ID, "err", err)
		return
	}
	w.queue.push(delivery{ID: doc.DeliveryID, Event: doc.Event, Body: body, Since: ev.Time})
}

func (w *webhookNotifier) run(ctx context.Context) {
	for {
		dl, ok := w.queue.peek(ctx)
		if !ok {
			return
		}
		err := w.d.attempt(ctx, w.label, dl.Since, w.cfg.MaxAttempts,
			func(ctx context.Context) error { return w.send(ctx, dl) }, classifyHTTP)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.d.once.log(w.logger, w.label+" "+classifyHTTP(err).reason, "webhook delivery failed",
				"delivery_id", dl.ID, "event", dl.Event, "err", err)
		}
		w.queue.pop()
		w.d.finished(ctx)
	}
}

// statusError is a response with a non-2xx status.
type statusError struct {
	code       int
	retryAfter time.Duration
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP status %d", e.code) }

func (w *webhookNotifier) send(ctx context.Context, dl delivery) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(dl.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "authwatch/"+w.d.version)
	req.Header.Set(HeaderDelivery, dl.ID)
	req.Header.Set(HeaderEvent, dl.Event)
	req.Header.Set(HeaderSignature, Sign([]byte(w.key.Reveal()), w.d.now(), dl.Body))
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &statusError{code: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// classifyHTTP retries 5xx, 408, 429 and transport errors, and gives up on
// any other 4xx, which a resend cannot fix.
func classifyHTTP(err error) verdict {
	var se *statusError
	if errors.As(err, &se) {
		switch {
		case se.code == http.StatusTooManyRequests:
			return verdict{reason: "rate_limited", retry: true, wait: se.retryAfter}
		case se.code == http.StatusRequestTimeout:
			return verdict{reason: "timeout", retry: true}
		case se.code >= 500:
			return verdict{reason: "server_error", retry: true}
		}
		return verdict{reason: "client_error"}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return verdict{reason: "timeout", retry: true}
	}
	return verdict{reason: "network", retry: true}
}
