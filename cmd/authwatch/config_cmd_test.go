package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authwatch/authwatch/incident"
)

// watchKeys and fixPath are the shared ends of some expected lines.
const (
	watchKeys = "valid keys are kubeconfig, context, namespaces, all_namespaces, selector, field_selector, containers, exclude_containers, since, max_streams, max_streams_per_node, time_slice, max_line_bytes, resume_margin, stall_min, stall_max, stall_factor, max_stream_age, backoff_min, backoff_max, qps, burst"
	fixPath   = "create the file or fix the path (relative paths are relative to the configuration file)"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		file     string
		wantCode int
		want     []string // lines expected on stdout or stderr
	}{
		{"valid.yaml", exitOK, []string{"testdata/config/valid.yaml: valid"}},
		{"invalid-watch.yaml", exitInvalid, []string{
			"authwatch: config testdata/config/invalid-watch.yaml is invalid:",
			`watch.all_namespaces: cannot be combined with namespaces ["a"]; set one of them`,
			`watch.selector: invalid label selector "app in (": unable to parse requirement: found '', expected: ',', ')' or identifier`,
			"watch.containers[0]: invalid pattern \"(\": error parsing regexp: missing closing ): `(`",
			"watch.since: negative duration -1m0s",
			"watch.max_line_bytes: 10 is below the minimum of 1024",
		}},
		{"unknown-key.yaml", exitInvalid, []string{
			"testdata/config/unknown-key.yaml:2: watch.namespace: unknown key \"namespace\"; did you mean namespaces? " + watchKeys,
		}},
		{"unknown-keys.yaml", exitInvalid, []string{
			"authwatch: config testdata/config/unknown-keys.yaml is invalid:",
			"testdata/config/unknown-keys.yaml:2: watch.namspaces: unknown key \"namspaces\"; did you mean namespaces? " + watchKeys,
			`testdata/config/unknown-keys.yaml:5: policies[0].windw: unknown key "windw"; did you mean window? valid keys are name, select, threshold, window, for, resolve_after`,
			`testdata/config/unknown-keys.yaml:8: alerting.slack.token: unknown key "token"; use token_file or token_env; secrets are never inline`,
			`testdata/config/unknown-keys.yaml:10: storm.workloads: invalid integer "many"; use a whole number such as 10`,
		}},
		{"bad-types.yaml", exitInvalid, []string{
			`testdata/config/bad-types.yaml:2: watch.all_namespaces: invalid boolean "yes please"; use true or false`,
			`testdata/config/bad-types.yaml:3: watch.namespaces: expected a list, got "town-builder"; write a list such as [a, b] or one "- item" per line`,
			`testdata/config/bad-types.yaml:4: watch.max_streams: invalid integer "1.5"; use a whole number such as 10`,
			`testdata/config/bad-types.yaml:8: policies[0].window: invalid duration 60: a duration needs a unit; use a Go duration such as 5m, 30s or 1h30m`,
			`testdata/config/bad-types.yaml:9: remediation: expected a mapping, got a list; write a mapping of key: value lines`,
		}},
		{"missing-rules.yaml", exitInvalid, []string{
			"authwatch: config testdata/config/missing-rules.yaml is invalid:",
			`rules.files[0]: cannot read "testdata/config/no-such-pack.yaml": no such file or directory; ` + fixPath,
		}},
		{"bad-duration.yaml", exitInvalid, []string{
			`testdata/config/bad-duration.yaml:2: watch.since: invalid duration "5 minutes"; use a Go duration such as 5m, 30s or 1h30m`,
		}},
		{"policy-default-resolve.yaml", exitInvalid, []string{
			"policies[1].resolve_after: invalid value 0s: use a positive duration such as 5m",
		}},
		{"refs/missing-files.yaml", exitInvalid, []string{
			"authwatch: warning: config testdata/config/refs/missing-files.yaml: alerting.webhooks[0].secret_env: environment variable AUTHWATCH_TEST_UNSET_SECRET is not set here; set it where authwatch runs",
			`watch.kubeconfig: cannot read "testdata/config/refs/no-such-kubeconfig": no such file or directory; ` + fixPath,
			`rules.files[1]: cannot read "testdata/config/refs/no-such-pack.yaml": no such file or directory; ` + fixPath,
			`alerting.slack.token_file: cannot read "testdata/config/refs/no-such-token": no such file or directory; ` + fixPath,
		}},
		{"refs/relative.yaml", exitOK, []string{"testdata/config/refs/relative.yaml: valid"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"config", "validate", "testdata/config/" + tc.file}, strings.NewReader(""), &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			lines := strings.Split(stdout.String()+stderr.String(), "\n")
			for _, want := range tc.want {
				found := false
				for _, l := range lines {
					found = found || strings.TrimSpace(l) == want
				}
				if !found {
					t.Errorf("output lacks the line %q; got:\n%s%s", want, stdout.String(), stderr.String())
				}
			}
		})
	}
}

func TestConfigValidateKeepsInlineSecret(t *testing.T) {
	var out bytes.Buffer
	run([]string{"config", "validate", "testdata/config/unknown-keys.yaml"}, strings.NewReader(""), &out, &out)
	if strings.Contains(out.String(), "xoxb-not-a-real-token") {
		t.Errorf("output contains the inline token:\n%s", out.String())
	}
}

func TestConfigResolvesPathsAgainstFile(t *testing.T) {
	cfg, err := loadConfig("testdata/config/refs/relative.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("testdata", "config", "refs", "pack.yaml"); len(cfg.Rules.Files) != 1 || cfg.Rules.Files[0] != want {
		t.Errorf("rules.files = %q, want [%q]", cfg.Rules.Files, want)
	}
	if want := filepath.Join("testdata", "config", "refs", "token"); cfg.Alerting.Slack.TokenFile != want {
		t.Errorf("alerting.slack.token_file = %q, want %q", cfg.Alerting.Slack.TokenFile, want)
	}
}

func TestConfigDefaultResolveAfter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	doc := "policies:\n  - {name: custom, threshold: 3, window: 1m}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Policies[0].ResolveAfter; got != incident.DefaultResolveAfter {
		t.Errorf("resolve_after without the key = %s, want %s", got, incident.DefaultResolveAfter)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"config", "validate"}, "authwatch: config validate: expected FILE, got no arguments; see authwatch config validate --help\n"},
		{[]string{"config", "validate", "a", "b"}, `authwatch: config validate: expected FILE, got 2 arguments ("a", "b"); see authwatch config validate --help` + "\n"},
		{[]string{"version", "x"}, `authwatch: version: takes no arguments, got 1 argument ("x"); see authwatch version --help` + "\n"},
		{[]string{"rules", "test"}, "authwatch: rules test: expected FILE..., got no arguments; see authwatch rules test --help\n"},
		{[]string{"run", "--bogus"}, "authwatch: unknown flag: --bogus; see authwatch run --help\n"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if got := stderr.String(); got != tc.want {
				t.Errorf("stderr = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConfigValidateNeedsFile(t *testing.T) {
	code := run([]string{"config", "validate"}, strings.NewReader(""), io.Discard, io.Discard)
	if code != exitUsage {
		t.Errorf("exit code = %d without a file, want %d", code, exitUsage)
	}
}
