package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authwatch/authwatch/rules"
)

func TestRulesGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"list", []string{"rules", "list"}},
		{"list-user-rules", []string{"rules", "list", "--rules", "testdata/rules/town.yaml", "--disable", "seed-error-auth-401"}},
		{"test-pass", []string{"rules", "test", "testdata/rules/town-test.yaml"}},
		{"test-fail", []string{"rules", "test", "testdata/rules/town-test-failing.yaml"}},
		{"test-missing-file", []string{"rules", "test", "testdata/rules/no-such-test.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", tc.args...)
			checkGolden(t, "rules/"+tc.name, tc.args, stdout, stderr, code)
		})
	}
}

// TestRulesListYAMLRoundTrip checks that `rules list -o yaml` prints a
// pack that compiles back to the same rules, so users can start an
// override from it.
func TestRulesListYAMLRoundTrip(t *testing.T) {
	stdout, stderr, code := runCLI(t, "", "rules", "list", "-o", "yaml")
	if code != exitOK {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	m, err := rules.Compile(rules.Options{NoDefault: true, Packs: []rules.PackFile{{Name: "listed.yaml", Data: []byte(stdout)}}})
	if err != nil {
		t.Fatalf("the listed pack does not compile: %v", err)
	}
	def, err := rules.Default()
	if err != nil {
		t.Fatal(err)
	}
	got, want := m.Rules(), def.Rules()
	if len(got) != len(want) {
		t.Fatalf("listed pack has %d rules, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Regex != want[i].Regex || got[i].Category != want[i].Category {
			t.Errorf("rule %d: got %s (%s), want %s (%s)", i, got[i].ID, got[i].Category, want[i].ID, want[i].Category)
		}
	}
}

func TestRulesTestFileErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"unknown key", "tests:\n  - line: x\n    expect: no match\n    expected: y\n",
			"line 4: field expected not found in type main.ruleTest"},
		{"no tests", "rule_files: []\n",
			"tests: no tests; add a list of tests with line and expect"},
		{"missing line and expect", "tests:\n  - name: empty\n",
			"tests[0]: missing line or lines\n" + "FILE: tests[0].expect: missing; give a rule id or \"no match\""},
		{"unknown category", "tests:\n  - line: x\n    expect: no match\n    category: auth\n",
			`tests[0].category: unknown category "auth"; valid categories are auth_failure, token_expired, error`},
		{"unknown rule id", "tests:\n  - line: x\n    expect: no-such-rule\n",
			`tests[0].expect: unknown rule id "no-such-rule"; give an active rule id or "no match"`},
		{"missing rule file", "rule_files: [missing.yaml]\ntests:\n  - line: x\n    expect: no match\n",
			"open DIR/missing.yaml: no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "test.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := runCLI(t, "", "rules", "test", path)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			want := strings.NewReplacer("FILE", path, "DIR", dir).Replace("authwatch: FILE: " + tc.want + "\n")
			if stderr != want {
				t.Errorf("stderr:\n got %q\nwant %q", stderr, want)
			}
		})
	}
}
