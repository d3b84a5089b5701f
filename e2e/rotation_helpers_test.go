//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
	"github.com/authwatch/authwatch/internal/secret"
	"github.com/authwatch/authwatch/remediation"
)

// The rotation tests' names: the iribala API (Django REST Framework) and
// its town-builder client, which reads its token from a Secret.
const (
	rotTarget     = "town-builder-api-token"
	rotSecret     = "town-builder-secrets"
	rotKey        = "TOWN_API_JWT_TOKEN"
	rotLogin      = "town-builder-login"
	rotUser       = "town-builder-service"
	drfPython     = "/usr/bin/python3"
	iribalaName   = "iribala-api"
	townBuilder   = "town-builder"
	drfLoginField = "password"
)

// iribala is a running instance of the test API.
type iribala struct {
	ns       string
	url      string // base URL, ending in "/"
	env      []string
	password string
}

// drfDir returns the absolute path of the Django project.
func drfDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("drf")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startIribala migrates a fresh SQLite database, creates the service
// user, and runs `manage.py runserver` as a pod of the node agent, whose
// exec runs commands with the same environment and database.
func startIribala(t *testing.T, ns string, accessLifetime time.Duration) *iribala {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	api := &iribala{
		ns:       ns,
		url:      fmt.Sprintf("http://127.0.0.1:%d/", port),
		password: "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		env: []string{
			"DRF_DB=" + filepath.Join(t.TempDir(), "iribala.sqlite3"),
			"DRF_ACCESS_SECONDS=" + strconv.Itoa(int(accessLifetime.Seconds())),
			"PYTHONUNBUFFERED=1",
			"PYTHONDONTWRITEBYTECODE=1",
		},
	}
	api.manage(t, "migrate", "-v0")
	api.manageWithEnv(t, []string{"DRF_SEED_PASSWORD=" + api.password}, "seed_user", rotUser)

	var env []corev1.EnvVar
	for _, kv := range api.env {
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	d := processDeployment(ns, iribalaName, drfDir(t), env,
		[]string{drfPython, "manage.py", "runserver", fmt.Sprintf("127.0.0.1:%d", port), "--noreload"})
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(t.Context(), time.Minute, "iribala API answering", func(ctx context.Context) (bool, error) {
		code, _, err := api.get(ctx, "api/towns/", "")
		if err != nil {
			return false, err
		}
		return code == http.StatusUnauthorized, fmt.Errorf("HTTP %d without a token", code)
	})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// manage runs a management command on the host against the test database.
func (a *iribala) manage(t *testing.T, args ...string) string {
	t.Helper()
	return a.manageWithEnv(t, nil, args...)
}

func (a *iribala) manageWithEnv(t *testing.T, extra []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), drfPython, append([]string{"manage.py"}, args...)...)
	cmd.Dir = drfDir(t)
	cmd.Env = append(append(os.Environ(), a.env...), extra...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("manage.py %s: %v\n%s", args[0], err, out)
	}
	return string(out)
}

// obtainJWT logs in at SimpleJWT's obtain-pair view and returns the access
// token.
func (a *iribala) obtainJWT(t *testing.T) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": rotUser, drfLoginField: a.password})
	resp, err := http.Post(a.url+"api/token/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pair struct {
		Access string `json:"access"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("obtain JWT: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&pair); err != nil || pair.Access == "" {
		t.Fatalf("obtain JWT: no access token in the response (%v)", err)
	}
	return pair.Access
}

// brokenJWT returns an access token of a with its signature broken. The API
// rejects it at once, as it would an expired one, and the token that a
// rotation obtains in its place outlives the test.
func (a *iribala) brokenJWT(t *testing.T) string {
	t.Helper()
	good := a.obtainJWT(t)
	return good[:len(good)-4] + "AAAA"
}

// get calls the API with an Authorization header (none when empty) and
// returns the status code and body.
func (a *iribala) get(ctx context.Context, path, authorization string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+path, nil)
	if err != nil {
		return 0, "", err
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), err
}

// processDeployment returns a one-pod Deployment that runs command in
// dir on the node agent's process image.
func processDeployment(ns, name, dir string, env []corev1.EnvVar, command []string) *appsv1.Deployment {
	return appDeployment(ns, name, 1, corev1.Container{Image: nodeagent.ProcessImage, WorkingDir: dir, Command: command, Env: env})
}

// createRotationSecrets stores the login credentials and the client's
// current token.
func createRotationSecrets(t *testing.T, api *iribala, token string) {
	t.Helper()
	secrets := cluster.Client().CoreV1().Secrets(api.ns)
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: rotLogin, Namespace: api.ns},
			Data: map[string][]byte{"username": []byte(rotUser), drfLoginField: []byte(api.password)}},
		{ObjectMeta: metav1.ObjectMeta{Name: rotSecret, Namespace: api.ns},
			Data: map[string][]byte{rotKey: []byte(token)}},
	} {
		if _, err := secrets.Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// startClient runs the town-builder client, which calls the API every
// 200ms with the token from the Secret and logs each failure with the
// API's response body.
func startClient(t *testing.T, api *iribala, scheme string, replicas int32) {
	t.Helper()
	env := []corev1.EnvVar{
		{Name: "API_URL", Value: api.url + "api/towns/"},
		{Name: "AUTH_SCHEME", Value: scheme},
		{Name: "PYTHONUNBUFFERED", Value: "1"},
		{Name: "PYTHONDONTWRITEBYTECODE", Value: "1"},
		{Name: rotKey, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: rotSecret}, Key: rotKey}}},
	}
	d := processDeployment(api.ns, townBuilder, drfDir(t), env, []string{drfPython, "client.py"})
	d.Spec.Replicas = &replicas
	if _, err := cluster.Client().AppsV1().Deployments(api.ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(t.Context(), api.ns, townBuilder, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// rotationConfig returns an authwatch config that watches the client and
// rotates its token from source. Policies resolve after 3s of quiet so
// that each expiry opens a new incident.
func rotationConfig(t *testing.T, ns string, dryRun bool, source string, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`watch:
  namespaces: [%[1]s]
  selector: app=%[2]s
  since: 1m
policies:
  - {name: token-expired, select: {categories: [token_expired], min_severity: error}, threshold: 1, window: 1m, resolve_after: 3s}
  - {name: auth-failures, select: {categories: [auth_failure], min_severity: error}, threshold: 5, window: 1m, resolve_after: 3s}
remediation:
  targets:
    - name: %[3]s
      on: [token-expired, auth-failures]
      secret: {namespace: %[1]s, name: %[4]s, key: %[5]s}
      restart: [{kind: Deployment, name: %[2]s}]
      dry_run: %[6]t
      min_validity: 2s
      cooldown: 3s
      max_per_hour: 20
      rollout_timeout: 90s
      verify_window: 5s
      source:
%[7]s
%[8]s`, ns, townBuilder, rotTarget, rotSecret, rotKey, dryRun, source, extra)
	path := filepath.Join(t.TempDir(), "authwatch.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// httpSourceYAML is the source block for SimpleJWT's obtain-pair view.
func httpSourceYAML(api *iribala) string {
	return fmt.Sprintf("        http: {url: %q, credentials_secret: %s, token_path: access, timeout: 10s}", api.url+"api/token/", rotLogin)
}

// firstFailure returns the time of the first line in which a
// town-builder pod reported a rejected call.
func firstFailure(ns string) (time.Time, bool) {
	for _, r := range agent.Records(ns, nil) {
		if strings.HasPrefix(r.Pod, townBuilder+"-") && strings.Contains(r.Text, "returned 401") {
			return r.Time, true
		}
	}
	return time.Time{}, false
}

// waitFirstFailure waits until the client reports a rejected call.
func waitFirstFailure(t *testing.T, ns string, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	err := harness.WaitFor(t.Context(), timeout, "the client's first 401", func(context.Context) (bool, error) {
		var ok bool
		at, ok = firstFailure(ns)
		return ok, fmt.Errorf("no 401 logged yet")
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// waitRotations waits until the daemons together count at least n
// rotations of the target with result, and returns when that was seen.
func waitRotations(t *testing.T, daemons []*daemon, result string, n float64, timeout time.Duration) time.Time {
	t.Helper()
	err := harness.WaitFor(t.Context(), timeout, fmt.Sprintf("%v rotation(s) with result %s", n, result), func(ctx context.Context) (bool, error) {
		got := 0.0
		for _, d := range daemons {
			if !d.running() {
				continue
			}
			s, err := d.metrics(ctx)
			if err != nil {
				return false, err
			}
			got += s.sum("authwatch_token_rotations_total", map[string]string{"target": rotTarget, "result": result})
		}
		return got >= n, fmt.Errorf("%v so far", got)
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

func getTargetSecret(t *testing.T, ns string) *corev1.Secret {
	t.Helper()
	s, err := cluster.Client().CoreV1().Secrets(ns).Get(t.Context(), rotSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rotationHistory returns the rotation times recorded on the Secret.
func rotationHistory(s *corev1.Secret) []string {
	h := s.Annotations[remediation.AnnotationHistory]
	if h == "" {
		return nil
	}
	return strings.Split(h, ",")
}

// waitClientRecovered waits until a pod created after since logs a
// successful call.
func waitClientRecovered(t *testing.T, ns string, since time.Time, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(t.Context(), timeout, "a new town-builder pod calling the API successfully", func(ctx context.Context) (bool, error) {
		pods, err := cluster.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + townBuilder})
		if err != nil {
			return false, err
		}
		fresh := map[string]bool{}
		for _, p := range pods.Items {
			if !p.CreationTimestamp.Time.Before(since.Truncate(time.Second)) {
				fresh[p.Name] = true
			}
		}
		for _, r := range agent.Records(ns, nil) {
			if fresh[r.Pod] && strings.Contains(r.Text, "returned 200") {
				return true, nil
			}
		}
		return false, fmt.Errorf("%d new pods, none logged a 200 yet", len(fresh))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkNoTokenIn fails when any form of a token appears in text.
func checkNoTokenIn(t *testing.T, where, text string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if tok == "" {
			continue
		}
		forms := []string{tok}
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			forms = append(forms, parts[1], parts[2])
		}
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s contains a token value %s", where, secret.Redacted)
			}
		}
	}
}

// rotationEvents returns the reasons of the Events that authwatch
// recorded in ns.
func rotationEvents(t *testing.T, ns string) ([]string, string) {
	t.Helper()
	list, err := cluster.Client().CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	var text strings.Builder
	for _, e := range list.Items {
		if e.Source.Component == "authwatch" || e.ReportingController == "authwatch.io/remediation" {
			reasons = append(reasons, e.Reason)
			text.WriteString(e.Message + "\n")
		}
	}
	return reasons, text.String()
}

// logBenchmark prints a measured duration in a form that
// docs/benchmarks.md quotes.
func logBenchmark(t *testing.T, what string, d time.Duration) {
	t.Helper()
	t.Logf("BENCH %s: %.1f s", what, d.Seconds())
}
