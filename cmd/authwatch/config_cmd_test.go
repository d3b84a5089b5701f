package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
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
		{"unknown-key.yaml", exitInvalid, []string{"line 2: field namespace not found in type watcher.Config"}},
		{"missing-rules.yaml", exitInvalid, []string{
			"authwatch: config testdata/config/missing-rules.yaml: rules.files: open testdata/config/no-such-pack.yaml: no such file or directory",
		}},
		{"bad-duration.yaml", exitInvalid, []string{
			`authwatch: config testdata/config/bad-duration.yaml: line 2: invalid duration "5 minutes", want a form such as 30s or 5m`,
		}},
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

func TestConfigValidateNeedsFile(t *testing.T) {
	code := run([]string{"config", "validate"}, strings.NewReader(""), io.Discard, io.Discard)
	if code != exitUsage {
		t.Errorf("exit code = %d without a file, want %d", code, exitUsage)
	}
}
