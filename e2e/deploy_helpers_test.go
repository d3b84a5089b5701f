//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/authwatch/authwatch/e2e/harness"
)

// repoRoot is the repository root as seen from the e2e package folder,
// where go test runs the tests.
const repoRoot = ".."

// repoBinary returns bin/<name>, which `make test-e2e` builds first.
func repoBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(repoRoot, "bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make build bin/helm` (make test-e2e does): %v", path, err)
	}
	return path
}

// renderChart runs `helm template` on deploy/helm/authwatch with release
// name release in namespace, values files (relative to the repository
// root unless absolute), and --set args.
func renderChart(t *testing.T, release, namespace string, values []string, sets ...string) []byte {
	t.Helper()
	args := []string{"template", release, filepath.Join(repoRoot, "deploy/helm/authwatch"), "--namespace", namespace}
	for _, v := range values {
		if !filepath.IsAbs(v) {
			v = filepath.Join(repoRoot, v)
		}
		args = append(args, "--values", v)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(repoBinary(t, "helm"), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

// manifestDoc is one object of a multi-document manifest, with the
// fields the tests select on.
type manifestDoc struct {
	Kind      string
	Name      string
	Namespace string
	Raw       []byte
}

func splitManifests(t *testing.T, data []byte) []manifestDoc {
	t.Helper()
	var docs []manifestDoc
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal(raw, &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind == "" {
			continue
		}
		docs = append(docs, manifestDoc{head.Kind, head.Metadata.Name, head.Metadata.Namespace, raw})
	}
}

func joinManifests(docs []manifestDoc) []byte {
	var b bytes.Buffer
	for _, d := range docs {
		b.WriteString("---\n")
		b.Write(d.Raw)
		b.WriteString("\n")
	}
	return b.Bytes()
}

// findDoc returns the only object of kind in docs and decodes it into out.
func findDoc(t *testing.T, docs []manifestDoc, kind string, out any) {
	t.Helper()
	var found []manifestDoc
	for _, d := range docs {
		if d.Kind == kind {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s in the manifests, expected 1", len(found), kind)
	}
	if err := sigsyaml.UnmarshalStrict(found[0].Raw, out); err != nil {
		t.Fatal(err)
	}
}

// deployedRun is an `authwatch run` process started the way the manifests'
// Deployment starts it, with its output kept for the test to read.
type deployedRun struct {
	cmd     *exec.Cmd
	addr    string
	mu      sync.Mutex // guards out
	out     bytes.Buffer
	done    chan struct{}
	waitErr error
}

// runAsDeployment starts authwatch with the container args of deployment,
// the configuration of its ConfigMap written to a file, and the given
// kubeconfig in place of the in-cluster one. env adds to the environment.
// It returns at once, and the process is stopped when the test ends.
func runAsDeployment(t *testing.T, deployment *appsv1.Deployment, config *corev1.ConfigMap, kubeconfig string, env []string, extraArgs ...string) *deployedRun {
	t.Helper()
	configFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(configFile, []byte(config.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	args := []string{"--kubeconfig=" + kubeconfig}
	for _, a := range deployment.Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--config="):
			args = append(args, "--config="+configFile)
		case strings.HasPrefix(a, "--listen-address="):
			args = append(args, "--listen-address="+addr)
		default:
			args = append(args, a)
		}
	}
	args = append(args, extraArgs...)

	r := &deployedRun{addr: addr, done: make(chan struct{})}
	r.cmd = exec.Command(repoBinary(t, "authwatch"), args...)
	r.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+deployment.Namespace, "POD_NAME="+deployment.Name+"-e2e")
	r.cmd.Env = append(r.cmd.Env, env...)
	w := &lockedWriter{mu: &r.mu, w: &r.out}
	r.cmd.Stdout = w
	r.cmd.Stderr = w
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("authwatch %v output:\n%s", args, r.output())
		}
	})
	return r
}

func (r *deployedRun) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

func (r *deployedRun) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *deployedRun) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

func (r *deployedRun) get(ctx context.Context, path string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+path, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), resp.StatusCode, err
}

func (r *deployedRun) metrics(ctx context.Context) (samples, error) {
	body, code, err := r.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", code)
	}
	return parseSamples(body)
}

// waitMetric waits until the sum of metric name over the series with
// labels reaches at least min.
func (r *deployedRun) waitMetric(t *testing.T, name string, labels map[string]string, min float64, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(t.Context(), timeout, fmt.Sprintf("%s%v >= %v", name, labels, min), func(ctx context.Context) (bool, error) {
		if !r.running() {
			return false, fmt.Errorf("%w: authwatch exited: %v", harness.ErrStopWaiting, r.waitErr)
		}
		s, err := r.metrics(ctx)
		if err != nil {
			return false, err
		}
		got := s.sum(name, labels)
		return got >= min, fmt.Errorf("%s%v = %v", name, labels, got)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failingClient is a workload that logs an expired-token failure every
// 200 ms, as a client of an API whose token expired does.
func failingClient(ns, name string) *appsv1.Deployment {
	return scriptDeployment(ns, name, 1, nil,
		`emit count=0 every=200ms text="ERROR GET http://api.iribala:8000/api/towns/ failed: TokenExpiredError: jwt expired"`,
	)
}

// execOutput runs a program and returns its combined output.
func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
