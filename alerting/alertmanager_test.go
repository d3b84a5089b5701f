package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
)

// startAlertmanager runs Debian's prometheus-alertmanager on a loopback
// port with one route to receiverURL and returns its base URL.
func startAlertmanager(t *testing.T, receiverURL string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Fatalf("prometheus-alertmanager not found: install the Debian package prometheus-alertmanager (.ci/run does): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: hook
  group_by: [policy, namespace, workload]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, receiverURL)
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+cfgPath, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", stderr.String())
		}
	})
	base := "http://" + addr
	waitFor(t, "alertmanager ready", 30*time.Second, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

type amGettable struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func getAlerts(t *testing.T, base string) []amGettable {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []amGettable
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

type amWebhook struct {
	Status string `json:"status"`
	Alerts []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

func TestAlertmanagerRealServer(t *testing.T) {
	var mu sync.Mutex
	var notified []amWebhook
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var n amWebhook
		_ = json.Unmarshal(b, &n)
		mu.Lock()
		notified = append(notified, n)
		mu.Unlock()
	}))
	defer rcv.Close()
	base := startAlertmanager(t, rcv.URL)

	h := newHarness(t, Config{Alertmanager: &AlertmanagerConfig{URL: base, RefreshInterval: 200 * time.Millisecond}})
	h.start(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	in.First.Text = "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123 -> 401"
	now := time.Now()
	in.FiredAt = now
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: now})

	var active amGettable
	waitFor(t, "active alert", 30*time.Second, func() bool {
		for _, a := range getAlerts(t, base) {
			if a.Labels["workload"] == "Deployment/api" && a.Status.State == "active" {
				active = a
				return true
			}
		}
		return false
	})
	for k, want := range map[string]string{"alertname": "AuthwatchIncident", "policy": "auth-failures", "namespace": "shop", "category": "auth_failure", "severity": "error"} {
		if active.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, active.Labels[k], want)
		}
	}
	if active.Annotations["incident_id"] != in.ID || strings.Contains(active.Annotations["first_sample"], "abcdefghijklmnop") {
		t.Errorf("annotations = %v", active.Annotations)
	}
	waitFor(t, "firing notification from alertmanager", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(notified) > 0 && notified[0].Status == "firing"
	})

	// Refreshes keep endsAt ahead of now.
	first := active.EndsAt
	waitFor(t, "refresh", 30*time.Second, func() bool {
		for _, a := range getAlerts(t, base) {
			if a.Labels["workload"] == "Deployment/api" && a.EndsAt.After(first) {
				return true
			}
		}
		return false
	})

	in.State = incident.StateResolved
	in.ResolvedAt = time.Now()
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: in.ResolvedAt})
	waitFor(t, "resolved notification from alertmanager", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range notified {
			if n.Status == "resolved" {
				return true
			}
		}
		return false
	})
	for _, a := range getAlerts(t, base) {
		if a.Labels["workload"] == "Deployment/api" && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
			t.Errorf("alert still active after resolve: %+v", a)
		}
	}
}

func TestAlertmanagerUpdatesWaitForRefresh(t *testing.T) {
	var mu sync.Mutex
	var posts []int
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var alerts []amAlert
		_ = json.NewDecoder(r.Body).Decode(&alerts)
		mu.Lock()
		posts = append(posts, len(alerts))
		mu.Unlock()
	}))
	defer am.Close()
	h := newHarness(t, Config{Alertmanager: &AlertmanagerConfig{URL: am.URL, RefreshInterval: time.Hour}})
	h.start(t)
	in := sampleIncident("shop", "Deployment/api", 5)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	for range 50 {
		in.Count++
		h.d.Notify(incident.Event{Transition: incident.Updated, Incident: in, Time: t0})
	}
	in.State, in.ResolvedAt = incident.StateResolved, t0.Add(time.Minute)
	h.d.Notify(incident.Event{Transition: incident.Resolved, Incident: in, Time: t0})
	waitFor(t, "pushes", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return h.d.Idle() && len(posts) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 2 {
		t.Errorf("alertmanager pushes = %d, want 2 (open and resolve; updates wait for the refresh)", len(posts))
	}
}
