package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/authwatch/authwatch/incident"
)

// amAlert is one alert in the Alertmanager v2 API (postableAlert).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// amPush is one queued POST of alerts.
type amPush struct {
	Alerts []amAlert `json:"alerts"`
	Since  time.Time `json:"since"`
}

// alertmanagerNotifier keeps every open incident as an active alert: it
// pushes on each transition and again every RefreshInterval with EndsAt
// a few intervals ahead, so an alert that authwatch stops refreshing
// (crash, lost leadership) resolves by itself, and pushes EndsAt = the
// resolve time on resolve.
type alertmanagerNotifier struct {
	d      *Dispatcher
	cfg    AlertmanagerConfig
	http   *http.Client
	logger *slog.Logger
	queue  *queue[amPush]

	mu   sync.Mutex // guards open
	open map[string]incident.Incident
}

const amLabel = "alertmanager"

func newAlertmanagerNotifier(d *Dispatcher, cfg AlertmanagerConfig, httpClient *http.Client) *alertmanagerNotifier {
	d.metrics.initChannel(amLabel)
	return &alertmanagerNotifier{
		d: d, cfg: cfg, http: httpClient,
		logger: d.logger.With("notifier", "alertmanager"),
		queue:  newQueue[amPush](func(l int) { d.metrics.queue.WithLabelValues(amLabel).Set(float64(l)) }),
		open:   map[string]incident.Incident{},
	}
}

func (a *alertmanagerNotifier) alert(in *incident.Incident, now time.Time) amAlert {
	r := a.d.redactor
	al := amAlert{
		Labels: labelsOf(in),
		Annotations: map[string]string{
			"summary":       fmt.Sprintf("%s: %d matches in %s/%s", in.Key.Policy, in.Count, in.Key.Namespace, in.Key.Workload),
			"incident_id":   in.ID,
			"count":         fmt.Sprint(in.Count),
			"pods":          strings.Join(in.Pods, ", "),
			"first_sample":  r.String(in.First.Text),
			"latest_sample": r.String(in.Latest.Text),
		},
		StartsAt: in.FiredAt,
		EndsAt:   now.Add(4 * a.cfg.RefreshInterval),
	}
	if in.IsStorm() {
		var names []string
		for _, k := range in.Members {
			names = append(names, k.Namespace+"/"+k.Workload)
		}
		al.Annotations["summary"] = fmt.Sprintf("storm: %d workloads failing", len(in.Members)+in.MoreMembers)
		al.Annotations["members"] = strings.Join(names, ", ")
	}
	if in.State == incident.StateResolved {
		al.EndsAt = in.ResolvedAt
	}
	return al
}

// handle pushes opened and resolved incidents at once. An update only
// refreshes the snapshot that the next periodic push sends, because the
// engine reports updates about once a second per incident.
func (a *alertmanagerNotifier) handle(ev incident.Event) {
	in := ev.Incident
	a.mu.Lock()
	if ev.Transition == incident.Resolved {
		delete(a.open, in.ID)
	} else {
		a.open[in.ID] = in
	}
	a.mu.Unlock()
	if ev.Transition == incident.Updated {
		return
	}
	a.queue.push(amPush{Alerts: []amAlert{a.alert(&in, ev.Time)}, Since: ev.Time})
}

func (a *alertmanagerNotifier) refresh(now time.Time) {
	a.mu.Lock()
	var alerts []amAlert
	for _, in := range a.open {
		alerts = append(alerts, a.alert(&in, now))
	}
	a.mu.Unlock()
	if len(alerts) > 0 && a.queue.len() == 0 {
		a.queue.push(amPush{Alerts: alerts, Since: now})
	}
}

func (a *alertmanagerNotifier) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(a.cfg.RefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.refresh(a.d.now())
			}
		}
	})
	for {
		p, ok := a.queue.peek(ctx)
		if !ok {
			break
		}
		err := a.d.attempt(ctx, amLabel, p.Since, 0, func(ctx context.Context) error { return a.send(ctx, p) }, classifyHTTP)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			a.d.once.log(a.logger, amLabel+" "+classifyHTTP(err).reason, "alertmanager push failed",
				"url", a.d.redactor.String(a.cfg.URL), "alerts", len(p.Alerts), "err", err)
		}
		a.queue.pop()
		a.d.finished(ctx)
	}
	wg.Wait()
}

func (a *alertmanagerNotifier) send(ctx context.Context, p amPush) error {
	body, err := json.Marshal(p.Alerts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.cfg.URL, "/")+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "authwatch/"+a.d.version)
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	if resp.StatusCode == http.StatusBadRequest {
		a.logger.Debug("alertmanager rejected alerts", "body", a.d.redactor.String(string(msg)))
	}
	return &statusError{code: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
}
