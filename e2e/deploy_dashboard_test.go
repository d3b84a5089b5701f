//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
)

// TestDeployDashboardPanelsHaveData runs authwatch with the chart's
// container arguments, a watched workload that fails authentication, a
// webhook and a rotation target, and has Debian's Prometheus scrape it.
// Every query of the Grafana dashboard must then return data, with the
// dashboard's variables replaced as Grafana replaces them for All.
func TestDeployDashboardPanelsHaveData(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "deploy-dashboard")
	client := cluster.Client()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, failingClient(ns, "town-builder"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(ctx, ns, "town-builder", time.Minute); err != nil {
		t.Fatal(err)
	}
	// The rotation target's Secret holds a JWT, so its expiry is exported.
	jwt := unsignedJWT(time.Now().Add(2 * time.Hour))
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "town-builder-secrets"},
		StringData: map[string]string{"TOWN_API_JWT_TOKEN": jwt},
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var hooks atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hooks.Add(1)
	}))
	t.Cleanup(hook.Close)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "hook-key")
	if err := os.WriteFile(keyFile, []byte("dashboard-test-webhook-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := &corev1.ConfigMap{Data: map[string]string{"config.yaml": fmt.Sprintf(`
watch:
  namespaces: [%[1]s]
  selector: app=town-builder
alerting:
  webhooks:
    - url: %[2]s/authwatch
      secret_file: %[3]s
remediation:
  targets:
    - name: town-builder-api-token
      on: [token-expired]
      secret: {namespace: %[1]s, name: town-builder-secrets, key: TOWN_API_JWT_TOKEN}
      restart: [{kind: Deployment, name: town-builder}]
      source:
        command: {command: [/bin/echo, unused-in-a-dry-run]}
      dry_run: true
`, ns, hook.URL, keyFile)}}

	var deployment appsv1.Deployment
	findDoc(t, splitManifests(t, renderChart(t, "dashboard", ns, nil)), "Deployment", &deployment)
	r := runAsDeployment(t, &deployment, config, cluster.Kubeconfig(), nil)
	r.waitMetric(t, "authwatch_matches_total", map[string]string{"namespace": ns}, 1, time.Minute)

	prom := startPrometheus(t, r.addr)
	err := harness.WaitFor(ctx, time.Minute, "Prometheus scraping authwatch", func(ctx context.Context) (bool, error) {
		res, err := prom.query(ctx, `up{job="authwatch"} == 1`)
		return err == nil && len(res) == 1, err
	})
	if err != nil {
		t.Fatal(err)
	}

	dashboard := readDashboard(t)
	// Rates need two samples inside their window: wait for each query to
	// return data rather than for a fixed time.
	for _, p := range dashboard.queries {
		t.Run(p.title+" "+p.refID, func(t *testing.T) {
			expr := grafanaExpr(p.expr)
			var last []json.RawMessage
			err := harness.WaitFor(ctx, 90*time.Second, "data for "+expr, func(ctx context.Context) (bool, error) {
				res, err := prom.query(ctx, expr)
				last = res
				return err == nil && len(res) > 0, err
			})
			if err != nil {
				t.Fatalf("panel %q query %s: %v (last result %s)", p.title, expr, err, last)
			}
		})
	}
	for _, v := range dashboard.variables {
		t.Run("variable "+v.name, func(t *testing.T) {
			values, err := prom.labelValues(ctx, v.label, grafanaExpr(v.selector))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"namespace": ns, "workload": "Deployment/town-builder"}[v.name]
			if !slices.Contains(values, want) {
				t.Errorf("label_values(%s, %s) = %q, expected it to contain %q", v.selector, v.label, values, want)
			}
		})
	}
	// Check the values of a few panels too, not only that they have data.
	for _, c := range []struct {
		title    string
		min, max float64
	}{
		{"Open incidents", 1, 10},
		{"Token expiry", time.Hour.Seconds(), (2*time.Hour + time.Minute).Seconds()},
		{"authwatch instances up", 1, 1},
	} {
		i := slices.IndexFunc(dashboard.queries, func(q dashboardQuery) bool { return q.title == c.title })
		if i < 0 {
			t.Errorf("the dashboard has no panel %q", c.title)
			continue
		}
		res, err := prom.query(ctx, grafanaExpr(dashboard.queries[i].expr))
		if err != nil {
			t.Fatal(err)
		}
		if got := sampleValue(t, res); got < c.min || got > c.max {
			t.Errorf("panel %q shows %v, expected between %v and %v", c.title, got, c.min, c.max)
		}
	}
	if hooks.Load() == 0 {
		t.Errorf("the webhook received no incident; its panels would show only zeros")
	}
}

// dashboardQuery is one query of one panel.
type dashboardQuery struct {
	title, refID, expr string
}

// dashboardVariable is a query variable of the form
// label_values(selector, label).
type dashboardVariable struct {
	name, label, selector string
}

type dashboardQueries struct {
	queries   []dashboardQuery
	variables []dashboardVariable
}

func readDashboard(t *testing.T) dashboardQueries {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/authwatch.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query json.RawMessage
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}

	var out dashboardQueries
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			walk(p.Panels)
			for _, tg := range p.Targets {
				out.queries = append(out.queries, dashboardQuery{p.Title, tg.RefID, tg.Expr})
			}
		}
	}
	walk(d.Panels)

	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatal(err)
		}
		inner, ok := strings.CutPrefix(q.Query, "label_values(")
		i := strings.LastIndex(inner, ",")
		if !ok || i < 0 || !strings.HasSuffix(inner, ")") {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
		}
		out.variables = append(out.variables, dashboardVariable{
			name: v.Name, selector: strings.TrimSpace(inner[:i]), label: strings.TrimSpace(strings.TrimSuffix(inner[i+1:], ")")),
		})
	}
	if len(out.queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}

// grafanaExpr replaces the dashboard's variables the way Grafana does
// with All selected (allValue ".*") and a 1m rate interval.
func grafanaExpr(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "1m",
		"$__range", "1h",
		"$namespace", ".*",
		"$workload", ".*",
	).Replace(expr)
}

// prometheus is a Prometheus server started by the test.
type prometheus struct {
	url string
}

// startPrometheus runs Debian's Prometheus on a loopback port, scraping
// target as job "authwatch" every second.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (%v): install Debian's prometheus package, as .ci/run does", err)
	}
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: authwatch
    static_configs:
      - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", out)
		}
	})
	p := &prometheus{url: "http://" + addr}
	err = harness.WaitFor(t.Context(), time.Minute, "Prometheus ready", func(ctx context.Context) (bool, error) {
		resp, err := p.get(ctx, "/-/ready", nil)
		if err != nil {
			return false, err
		}
		return resp != nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// get returns the body of a 200 response to path with query.
func (p *prometheus) get(ctx context.Context, path string, query url.Values) ([]byte, error) {
	u := p.url + path
	if query != nil {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, body)
	}
	return body, nil
}

// query runs an instant query and returns the result's series.
func (p *prometheus) query(ctx context.Context, expr string) ([]json.RawMessage, error) {
	body, err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, err
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", expr, resp.Error)
	}
	return resp.Data.Result, nil
}

// labelValues returns the values of label on the series that selector
// selects, as Grafana's label_values does.
func (p *prometheus) labelValues(ctx context.Context, label, selector string) ([]string, error) {
	body, err := p.get(ctx, "/api/v1/label/"+label+"/values", url.Values{"match[]": {selector}})
	if err != nil {
		return nil, err
	}
	var resp struct {
		Data []string `json:"data"`
	}
	err = json.Unmarshal(body, &resp)
	return resp.Data, err
}

// unsignedJWT returns a JWT with the given exp and an empty signature;
// authwatch reads the exp claim and never verifies the signature.
func unsignedJWT(exp time.Time) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload := enc.EncodeToString(fmt.Appendf(nil, `{"sub":"town-builder","exp":%d}`, exp.Unix()))
	return header + "." + payload + "." + enc.EncodeToString([]byte("not-a-signature"))
}

// sampleValue returns the value of the only series of an instant query.
func sampleValue(t *testing.T, result []json.RawMessage) float64 {
	t.Helper()
	if len(result) != 1 {
		t.Fatalf("%d series, expected 1: %s", len(result), result)
	}
	var series struct {
		Value [2]any `json:"value"`
	}
	if err := json.Unmarshal(result[0], &series); err != nil {
		t.Fatal(err)
	}
	text, _ := series.Value[1].(string)
	v, err := strconv.ParseFloat(text, 64)
	if err != nil {
		t.Fatalf("sample value %v: %v", series.Value, err)
	}
	return v
}
