//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
	"github.com/authwatch/authwatch/rules"
)

// authwatchBin is the authwatch binary built from this checkout by
// TestMain.
var authwatchBin string

func buildAuthwatch(dir string) (string, error) {
	out := filepath.Join(dir, "authwatch")
	cmd := exec.Command("go", "build", "-o", out, "github.com/authwatch/authwatch/cmd/authwatch")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build authwatch: %w\n%s", err, b)
	}
	return out, nil
}

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type samples []sample

// sum adds the values of the samples of metric name whose labels include
// every pair in match.
func (s samples) sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, x := range s {
		if x.name != name || !hasLabels(x.labels, match) {
			continue
		}
		total += x.value
	}
	return total
}

func hasLabels(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// parseSamples reads the Prometheus text format, enough for the label
// values our metrics use (no escaped quotes).
func parseSamples(text string) (samples, error) {
	var out samples
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics line %q: unbalanced braces", line)
			}
			s.name = line[:i]
			for _, pair := range splitLabels(line[i+1 : j]) {
				k, v, ok := strings.Cut(pair, "=")
				if !ok {
					return nil, fmt.Errorf("metrics line %q: label %q", line, pair)
				}
				s.labels[k] = strings.Trim(v, `"`)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			name, value, _ := strings.Cut(line, " ")
			s.name, rest = name, value
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

func splitLabels(s string) []string {
	var parts []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		parts = append(parts, s[start:])
	}
	return parts
}

// applyDeployRBAC applies the ServiceAccount and RBAC of
// deploy/kustomize/base in the authwatch namespace and returns a
// kubeconfig for that ServiceAccount.
func applyDeployRBAC(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	base := filepath.Join("..", "deploy", "kustomize", "base")
	// CreateNamespace first: an earlier test may have deleted the
	// namespace, and nothing can be applied in it until it is gone.
	if err := cluster.CreateNamespace(ctx, "authwatch"); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Kubectl(ctx, "apply", "-f", filepath.Join(base, "namespace.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"serviceaccount.yaml", "rbac-self.yaml", "rbac-watch.yaml"} {
		if _, err := cluster.Kubectl(ctx, "apply", "-n", "authwatch", "-f", filepath.Join(base, f)); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig, _, err := cluster.ServiceAccountKubeconfig(ctx, "authwatch", "authwatch")
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// expectedCounts returns what authwatch should count for records: the
// number of lines, and the matches by rule and category from the default
// rule pack.
func expectedCounts(t *testing.T, records []nodeagent.Record) (lines int, matches map[[2]string]int) {
	t.Helper()
	m, err := rules.Default()
	if err != nil {
		t.Fatal(err)
	}
	matches = map[[2]string]int{}
	var buf []rules.Match
	for _, r := range records {
		line := &rules.Line{Text: []byte(r.Text), Time: r.Time}
		buf = m.Match(line, buf[:0])
		for _, x := range buf {
			matches[[2]string{x.RuleID, x.Category.String()}]++
		}
	}
	return len(records), matches
}

// waitLineCount waits until authwatch has counted want lines for the
// workload, then checks that it counted no more.
func waitLineCount(t *testing.T, d *daemon, ns, workload string, want func() int, timeout time.Duration) {
	t.Helper()
	labels := map[string]string{"namespace": ns, "workload": workload}
	var got float64
	err := harness.WaitFor(t.Context(), timeout, fmt.Sprintf("authwatch counting the lines of %s/%s", ns, workload), func(ctx context.Context) (bool, error) {
		if !d.running() {
			return false, fmt.Errorf("%w: authwatch exited: %v", harness.ErrStopWaiting, d.waitErr)
		}
		s, err := d.metrics(ctx)
		if err != nil {
			return false, err
		}
		got = s.sum("authwatch_log_lines_total", labels)
		w := want()
		return int(got) >= w, fmt.Errorf("authwatch_log_lines_total%v = %v, want %d", labels, got, w)
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := want(); int(got) != w {
		t.Errorf("authwatch_log_lines_total%v = %v, want %d (the lines the containers wrote)", labels, got, w)
	}
}
