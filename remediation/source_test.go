package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// issuer is a stand-in for a SimpleJWT obtain-pair endpoint: it checks the
// credentials and responds as the real view does.
func issuer(t *testing.T, respond func(w http.ResponseWriter, fields map[string]string)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fields := map[string]string{}
		switch r.Header.Get("Content-Type") {
		case "application/json":
			if err := json.NewDecoder(r.Body).Decode(&fields); err != nil {
				http.Error(w, "bad json", http.StatusBadRequest)
				return
			}
		case "application/x-www-form-urlencoded":
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form", http.StatusBadRequest)
				return
			}
			for k := range r.PostForm {
				fields[k] = r.PostForm.Get(k)
			}
		}
		respond(w, fields)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPSource(t *testing.T) {
	good := makeJWT(time.Now().Add(5*time.Minute), "issued")
	credentials := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "login", Namespace: testNS},
		Data:       map[string][]byte{"username": []byte("town-builder-service"), "password": []byte("pa55-word")},
	}
	tests := []struct {
		name    string
		format  string
		path    string
		respond func(w http.ResponseWriter, fields map[string]string)
		wantErr string
	}{
		{name: "obtain pair", path: "access", respond: func(w http.ResponseWriter, f map[string]string) {
			if f["username"] != "town-builder-service" || f["password"] != "pa55-word" {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"detail":"No active account found with the given credentials"}`)
				return
			}
			fmt.Fprintf(w, `{"refresh":"r","access":%q}`, good)
		}},
		{name: "form body nested path", format: "form", path: "data.token", respond: func(w http.ResponseWriter, f map[string]string) {
			if f["username"] == "" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, `{"data":{"token":%q}}`, good)
		}},
		{name: "unauthorized", path: "access", wantErr: "returned HTTP 401", respond: func(w http.ResponseWriter, _ map[string]string) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"detail":"echo pa55-word"}`)
		}},
		{name: "garbage", path: "access", wantErr: "response is not JSON", respond: func(w http.ResponseWriter, _ map[string]string) {
			fmt.Fprint(w, "<html>maintenance</html>")
		}},
		{name: "missing field", path: "access", wantErr: `field access not found`, respond: func(w http.ResponseWriter, _ map[string]string) {
			fmt.Fprint(w, `{"token":"x"}`)
		}},
		{name: "not a string", path: "access", wantErr: "found a JSON number", respond: func(w http.ResponseWriter, _ map[string]string) {
			fmt.Fprint(w, `{"access":42}`)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := issuer(t, tc.respond)
			cfg := HTTPSource{URL: srv.URL + "/api/token/", Method: "POST", BodyFormat: "json", CredentialsSecret: "login", TokenPath: tc.path, Timeout: 5 * time.Second}
			if tc.format != "" {
				cfg.BodyFormat = tc.format
			}
			src, err := newHTTPSource(cfg, testNS, fake.NewClientset(credentials))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Token(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrSource) {
					t.Fatalf("err = %v, want ErrSource containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "pa55-word") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Reveal() != good {
				t.Error("token is not the issued access token")
			}
		})
	}
}

func TestHTTPSourceUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	src, err := newHTTPSource(HTTPSource{URL: url, Method: "POST", TokenPath: "access", Timeout: time.Second}, testNS, fake.NewClientset())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(t.Context()); err == nil || !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want ErrSource naming the refused connection", err)
	}
}

func TestHTTPSourceCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "login.json")
	if err := os.WriteFile(path, []byte(`{"username":"u","password":"p"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := issuer(t, func(w http.ResponseWriter, f map[string]string) {
		if f["username"] != "u" || f["password"] != "p" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"token":"abc123"}`)
	})
	src, err := newHTTPSource(HTTPSource{URL: srv.URL, Method: "POST", BodyFormat: "json", CredentialsFile: path, TokenPath: "token", Timeout: time.Second}, testNS, fake.NewClientset())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(t.Context())
	if err != nil || tok.Reveal() != "abc123" {
		t.Errorf("token ok = %v, err = %v, want abc123", tok.Reveal() == "abc123", err)
	}
}

func TestCommandSource(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		want    string
		wantErr string
	}{
		{name: "prints token", command: []string{"/bin/sh", "-c", "printf 'tok-123\\n'"}, want: "tok-123"},
		{name: "fails", command: []string{"/bin/sh", "-c", "echo secret-on-stderr >&2; exit 3"}, wantErr: "exit status 3"},
		{name: "missing program", command: []string{"/nonexistent/issuer"}, wantErr: "no such file"},
		{name: "timeout", command: []string{"/bin/sleep", "5"}, wantErr: "timed out after 100ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &commandSource{cfg: CommandSource{Command: tc.command, Timeout: 100 * time.Millisecond}}
			if tc.name != "timeout" {
				src.cfg.Timeout = 5 * time.Second
			}
			tok, err := src.Token(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret-on-stderr") {
					t.Errorf("error repeats stderr: %v", err)
				}
				return
			}
			if err != nil || tok.Reveal() != tc.want {
				t.Errorf("token = %q, err = %v, want %q", tok.Reveal(), err, tc.want)
			}
		})
	}
}

// scriptedExecutor returns fixed output for every exec call.
type scriptedExecutor struct {
	stdout string
	err    error
	pod    string
	cmd    []string
}

func (e *scriptedExecutor) Exec(_ context.Context, _, pod, _ string, command []string, stdout, _ io.Writer) error {
	e.pod, e.cmd = pod, command
	if e.err != nil {
		return e.err
	}
	_, err := io.WriteString(stdout, e.stdout)
	return err
}

func apiPod(name string, ready bool, phase corev1.PodPhase) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "iribala", Labels: map[string]string{"app": "iribala-api"}},
		Status:     corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func TestExecSource(t *testing.T) {
	cfg := ExecSource{
		Namespace: "iribala", Selector: "app=iribala-api", Container: "api",
		Command:      []string{"python3", "manage.py", "drf_create_token", "-r", "town-builder-service"},
		TokenPattern: `Generated token ([0-9a-f]{40}) for user`, Timeout: 5 * time.Second,
	}
	key := strings.Repeat("ab12", 10)
	tests := []struct {
		name    string
		pods    []*corev1.Pod
		stdout  string
		execErr error
		wantPod string
		wantErr string
	}{
		{name: "ready pod", pods: []*corev1.Pod{apiPod("api-b", true, corev1.PodRunning), apiPod("api-a", false, corev1.PodRunning), apiPod("api-c", true, corev1.PodRunning)},
			stdout: "Generated token " + key + " for user town-builder-service\n", wantPod: "api-b"},
		{name: "no ready pod", pods: []*corev1.Pod{apiPod("api-a", false, corev1.PodRunning), apiPod("api-p", true, corev1.PodPending)},
			wantErr: "no running, ready pod in iribala matches app=iribala-api (2 found)"},
		{name: "unexpected output", pods: []*corev1.Pod{apiPod("api-a", true, corev1.PodRunning)},
			stdout: "CommandError: user town-builder-service does not exist\n", wantErr: "does not match token_pattern"},
		{name: "exec fails", pods: []*corev1.Pod{apiPod("api-a", true, corev1.PodRunning)},
			execErr: errors.New("command terminated with exit code 1"), wantErr: "exit code 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtimeObject
			for _, p := range tc.pods {
				objs = append(objs, p)
			}
			ex := &scriptedExecutor{stdout: tc.stdout, err: tc.execErr}
			src := &execSource{cfg: cfg, pattern: regexp.MustCompile(cfg.TokenPattern), client: fake.NewClientset(objs...), exec: ex}
			tok, err := src.Token(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrSource) {
					t.Fatalf("err = %v, want ErrSource containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Reveal() != key {
				t.Error("token is not the generated key")
			}
			if ex.pod != tc.wantPod {
				t.Errorf("exec in pod %s, want %s", ex.pod, tc.wantPod)
			}
		})
	}
}

func TestValidateToken(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	noExp := makeJWT(now, "x")
	noExp = noExp[:strings.Index(noExp, ".")] + ".eyJzdWIiOiJ4In0." + "c2ln"
	tests := []struct {
		name    string
		token   string
		format  string
		wantErr string
	}{
		{name: "valid jwt", token: makeJWT(now.Add(time.Hour), "a"), format: "auto"},
		{name: "opaque drf key", token: strings.Repeat("9f", 20), format: "auto"},
		{name: "empty", token: "", format: "auto", wantErr: "empty"},
		{name: "whitespace", token: "abc def", format: "auto", wantErr: "whitespace"},
		{name: "expired jwt", token: makeJWT(now.Add(-time.Minute), "a"), format: "auto", wantErr: "JWT expires at 2025-12-31T23:59:00Z"},
		{name: "expires too soon", token: makeJWT(now.Add(30*time.Second), "a"), format: "jwt", wantErr: "less than min_validity 1m0s"},
		{name: "jwt required", token: "opaque-key", format: "jwt", wantErr: "not a JWT"},
		{name: "jwt without exp", token: noExp, format: "jwt", wantErr: "no exp claim"},
		{name: "jwt garbage payload", token: "a.!!!.c", format: "auto", wantErr: "not base64url"},
		{name: "opaque skips jwt checks", token: makeJWT(now.Add(-time.Hour), "a"), format: "opaque"},
		{name: "too long", token: strings.Repeat("a", maxTokenLength+1), format: "auto", wantErr: "more than the 16384 allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateToken(secretValue(tc.token), tc.format, time.Minute, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken containing %q", err, tc.wantErr)
			}
			if tc.token != "" && len(tc.token) > 3 && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error contains the token: %v", err)
			}
		})
	}
}
