package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The flags are checked before the kubeconfig is read, so none of these
// cases needs a cluster. A missing kubeconfig would show up as a
// different message.
func TestRunFlagErrorsNameFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"all and namespace", []string{"-A", "-n", "a"},
			`authwatch: -A/--all-namespaces cannot be combined with -n/--namespace "a"; give one of them`},
		{"all and two namespaces", []string{"--all-namespaces", "-n", "a", "--namespace", "b"},
			`authwatch: -A/--all-namespaces cannot be combined with -n/--namespace "a", "b"; give one of them`},
		{"empty namespace", []string{"-n", ""},
			"authwatch: -n/--namespace: empty namespace name; name a namespace or leave the flag out"},
		{"bad selector", []string{"-l", "app in ("},
			`authwatch: -l/--selector: invalid label selector "app in (": unable to parse requirement: found '', expected: ',', ')' or identifier; write it as kubectl does, for example app=api,tier!=cache`},
		{"bad field selector", []string{"--field-selector", "spec.nodeName"},
			`authwatch: --field-selector: invalid field selector "spec.nodeName": invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'; use a form such as spec.nodeName=node-1`},
		{"bad container pattern", []string{"--container", "("},
			"authwatch: --container: invalid RE2 pattern \"(\": error parsing regexp: missing closing ): `(`"},
		{"negative since", []string{"--since", "-1m"},
			"authwatch: --since: negative duration -1m0s; use 0 or a duration such as 5m"},
		{"zero qps", []string{"--qps", "0"}, "authwatch: --qps: must be positive, got 0"},
		{"negative max streams", []string{"--max-streams", "-1"}, "authwatch: --max-streams: negative cap -1; use 0 for no cap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--kubeconfig", "/nonexistent/kubeconfig"}, tc.args...)
			var stderr bytes.Buffer
			code := run(args, strings.NewReader(""), io.Discard, &stderr)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if got := strings.TrimSuffix(stderr.String(), "\n"); got != tc.want {
				t.Errorf("stderr = %q\nwant     %q", got, tc.want)
			}
		})
	}
}

// A namespace flag replaces the file's namespaces or all_namespaces, so
// the combination of a flag and the file is no error.
func TestRunNamespaceFlagOverridesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authwatch.yaml")
	if err := os.WriteFile(path, []byte("watch: {all_namespaces: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run([]string{"run", "--config", path, "--kubeconfig", filepath.Join(dir, "missing-kubeconfig"), "-n", "a"}, strings.NewReader(""), io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "kubeconfig") || strings.Contains(stderr.String(), "all_namespaces") {
		t.Errorf("exit %d, stderr %q; want the kubeconfig error, not a namespace conflict", code, stderr.String())
	}
}
