//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
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

// runAsDeployment starts authwatch with the container args of deployment,
// the configuration of its ConfigMap written to a file, and the given
// kubeconfig in place of the in-cluster one. env adds to the environment.
// It returns at once, and the process is stopped when the test ends.
func runAsDeployment(t *testing.T, deployment *appsv1.Deployment, config *corev1.ConfigMap, kubeconfig string, env []string, extraArgs ...string) *daemon {
	t.Helper()
	configFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(configFile, []byte(config.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t)
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

	return startDaemon(t, daemonOptions{
		bin:  repoBinary(t, "authwatch"),
		addr: addr,
		args: args,
		env:  append([]string{"POD_NAMESPACE=" + deployment.Namespace, "POD_NAME=" + deployment.Name + "-e2e"}, env...),
	})
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
