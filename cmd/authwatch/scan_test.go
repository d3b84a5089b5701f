package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// updateGolden rewrites the golden files of scan and rules tests from the
// current output: go test ./cmd/authwatch -run 'Scan|Rules' -update.
var updateGolden = flag.Bool("update", false, "rewrite testdata golden files")

// runCLI runs authwatch with args and returns stdout, stderr and the exit
// code.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// checkGolden compares the result of one command with testdata/<name>.golden.
func checkGolden(t *testing.T, name string, args []string, stdout, stderr string, code int) {
	t.Helper()
	got := fmt.Sprintf("$ authwatch %s\nexit status %d\n-- stdout --\n%s-- stderr --\n%s",
		strings.Join(args, " "), code, stdout, stderr)
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestScanGolden(t *testing.T) {
	const dir = "testdata/scan/"
	tests := []struct {
		name  string
		args  []string
		stdin string
	}{
		{"plain", []string{"scan", dir + "plain.log"}, ""},
		{"plain-all-categories", []string{"scan", "--category", "all", dir + "plain.log"}, ""},
		{"nothing", []string{"scan", dir + "nothing.log"}, ""},
		{"crlf", []string{"scan", dir + "crlf.log"}, ""},
		{"binary", []string{"scan", dir + "binary.log"}, ""},
		{"no-newline", []string{"scan", dir + "no-newline.log"}, ""},
		{"timestamps", []string{"scan", dir + "timestamps.log"}, ""},
		{"prefix", []string{"scan", dir + "prefix.log", dir + "prefix-timestamps.log"}, ""},
		{"cri", []string{"scan", dir + "cri.log"}, ""},
		{"cri-forced-plain", []string{"scan", "--format", "plain", dir + "cri.log"}, ""},
		{"json-lines", []string{"scan", dir + "json.log"}, ""},
		{"json-output", []string{"scan", "-o", "json", dir + "json.log", dir + "timestamps.log"}, ""},
		{"tokens", []string{"scan", dir + "tokens.log"}, ""},
		{"tokens-json", []string{"scan", "-o", "json", dir + "tokens.log"}, ""},
		{"long-line-gzip", []string{"scan", "--max-print-bytes", "80", dir + "long-line.log.gz"}, ""},
		{"max-line-bytes", []string{"scan", "--max-line-bytes", "40", dir + "plain.log"}, ""},
		{"stdin", []string{"scan", "-"}, "TokenExpiredError: jwt expired\nINFO ok\n"},
		{"missing-file", []string{"scan", dir + "plain.log", dir + "does-not-exist.log"}, ""},
		{"bad-format", []string{"scan", "--format", "syslog", dir + "plain.log"}, ""},
		{"bad-category", []string{"scan", "--category", "auth", dir + "plain.log"}, ""},
		{"disable", []string{"scan", "--disable", "token-expired,http-client-401-403", dir + "plain.log"}, ""},
		{"disable-unknown", []string{"scan", "--disable", "no-such-rule", dir + "plain.log"}, ""},
		{"user-rules", []string{"scan", "--rules", "testdata/rules/town.yaml", dir + "plain.log"}, ""},
		{"user-rules-invalid", []string{"scan", "--rules", "testdata/rules/invalid.yaml", dir + "plain.log"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.stdin, tc.args...)
			checkGolden(t, "scan/"+tc.name, tc.args, stdout, stderr, code)
		})
	}
}

func TestScanExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"match", []string{"scan", "testdata/scan/plain.log"}, exitOK},
		{"no match", []string{"scan", "testdata/scan/nothing.log"}, exitNotFound},
		{"missing file", []string{"scan", "testdata/scan/does-not-exist.log"}, exitUsage},
		{"match and missing file", []string{"scan", "testdata/scan/plain.log", "testdata/scan/does-not-exist.log"}, exitUsage},
		{"bad flag", []string{"scan", "--output", "xml", "testdata/scan/plain.log"}, exitUsage},
		{"zero line cap", []string{"scan", "--max-line-bytes", "0", "testdata/scan/plain.log"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, code := runCLI(t, "", tc.args...)
			if code != tc.want {
				t.Errorf("exit status %d, want %d", code, tc.want)
			}
		})
	}
}

// TestScanKeepsInputOrderAcrossChunks scans an input of many chunks, which
// the workers match concurrently, and checks that every match is printed
// once, in input order, with its line number.
func TestScanKeepsInputOrderAcrossChunks(t *testing.T) {
	var in strings.Builder
	var want []int
	for i := 1; i <= 3*scanChunkLines+17; i++ {
		if i%97 == 0 {
			fmt.Fprintf(&in, "2026-05-02 11:00:05 ERROR client: GET /api/towns/%d -> 401 Unauthorized\n", i)
			want = append(want, i)
			continue
		}
		fmt.Fprintf(&in, "2026-05-02 11:00:05 INFO worker: built %d houses in town %d\n", i%50, i)
	}
	stdout, stderr, code := runCLI(t, in.String(), "scan", "-")
	if code != exitOK {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", code, stderr)
	}
	var got []int
	for _, l := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var n int
		if _, err := fmt.Sscanf(l, "(standard input):%d:", &n); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		got = append(got, n)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("line numbers of the matches (-want +got):\n%s", diff)
	}
	wantSummary := fmt.Sprintf("%d lines, %d matches", 3*scanChunkLines+17, len(want))
	if !strings.Contains(stderr, wantSummary) {
		t.Errorf("summary %q does not contain %q", stderr, wantSummary)
	}
}

// TestScanJSONOutputParses checks that every line of -o json is one JSON
// object with the documented keys, including for invalid UTF-8 input.
func TestScanJSONOutputParses(t *testing.T) {
	stdout, _, code := runCLI(t, "", "scan", "-o", "json", "--category", "all",
		"testdata/scan/binary.log", "testdata/scan/cri.log", "testdata/scan/prefix.log")
	if code != exitOK {
		t.Fatalf("exit status %d, want 0", code)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("got %d JSON lines, want at least 5:\n%s", len(lines), stdout)
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		for _, key := range []string{"source", "line", "rule", "category", "severity", "text"} {
			if _, ok := m[key]; !ok {
				t.Errorf("line %d: missing key %q: %s", i+1, key, l)
			}
		}
	}
}

// secretsInTestdata are the credentials written into
// testdata/scan/tokens.log. None may appear in any output.
var secretsInTestdata = []string{
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
	"eyJzdWIiOiJ0b3duLWJ1aWxkZXIiLCJleHAiOjE3NDYxODM2MDB9",
	"Zm9vYmFyYmF6cXV4c2lnbmF0dXJl",
	"9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
	"s3cr3t-query-t0ken-value",
	"Sup3rS3cretPassw0rd",
	"hunter2-not-real",
	"AKIAIOSFODNN7EXAMPLE",
	"xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
	"eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZSIsImV4cCI6MTc0NjE4MzYwMH0",
	"c2lnbmF0dXJlLXR3by1ub3QtcmVhbA",
	"dG93bjpodW50ZXIy",
}

// TestScanNeverPrintsSecrets runs every output mode over the file of
// tokens and checks that no credential from it reaches stdout or stderr,
// not even a part of a JWT.
func TestScanNeverPrintsSecrets(t *testing.T) {
	data, err := os.ReadFile("testdata/scan/tokens.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secretsInTestdata {
		if !bytes.Contains(data, []byte(s)) {
			t.Fatalf("secret %q is not in tokens.log; the test would prove nothing", s)
		}
	}
	runs := [][]string{
		{"scan", "testdata/scan/tokens.log"},
		{"scan", "--category", "all", "testdata/scan/tokens.log"},
		{"scan", "-o", "json", "--category", "all", "testdata/scan/tokens.log"},
		{"scan", "--max-print-bytes", "60", "testdata/scan/tokens.log"},
		{"scan", "--format", "cri", "testdata/scan/tokens.log"},
		{"scan", "-"},
		{"rules", "test", "testdata/rules/tokens-test.yaml"},
	}
	matched := 0
	for _, args := range runs {
		stdout, stderr, code := runCLI(t, string(data), args...)
		if code == exitOK {
			matched++
		}
		for _, s := range secretsInTestdata {
			if strings.Contains(stdout, s) || strings.Contains(stderr, s) {
				t.Errorf("authwatch %s printed the secret %q", strings.Join(args, " "), s)
			}
		}
	}
	if matched < 5 {
		t.Errorf("only %d of %d runs matched; the runs must print the token lines to prove anything", matched, len(runs))
	}
}

// TestScanProgress checks that --progress=always reports on standard
// error during a long scan and clears its status line at the end.
func TestScanProgress(t *testing.T) {
	var in strings.Builder
	for i := range 70000 { // the status line is updated every 65,536 lines at most
		fmt.Fprintf(&in, "INFO request %d served\n", i)
	}
	in.WriteString("TokenExpiredError: jwt expired\n")
	stdout, stderr, code := runCLI(t, in.String(), "scan", "--progress", "always", "--summary=false", "-")
	if code != exitOK {
		t.Fatalf("exit status %d, want 0", code)
	}
	if !strings.Contains(stderr, "(standard input): ") || !strings.Contains(stderr, "MiB read") {
		t.Errorf("stderr has no progress line: %q", stderr)
	}
	if !strings.HasSuffix(stderr, "\r\033[K") {
		t.Errorf("stderr does not end by clearing the status line: %q", stderr)
	}
	if strings.Contains(stdout, "MiB read") {
		t.Error("progress went to standard output")
	}
	if _, _, code := runCLI(t, "", "scan", "--progress", "sometimes", "-"); code != exitUsage {
		t.Errorf("--progress sometimes: exit status %d, want %d", code, exitUsage)
	}
}

// TestScanSharedOutputKeepsLinesWhole runs scan with standard output and
// standard error in one buffer, as `2>&1` does, and checks that no error
// message, status line or summary lands inside a match line. The matches
// fill more than the 64 KiB output buffer, so that it is written out in
// the middle of a line.
func TestScanSharedOutputKeepsLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	var in strings.Builder
	for i := 1; i <= 10000; i++ {
		if i%10 == 0 {
			fmt.Fprintf(&in, "ERROR client: GET /api/towns/%d -> 401 Unauthorized\n", i)
			continue
		}
		fmt.Fprintf(&in, "INFO worker: built houses in town %d\n", i)
	}
	if err := os.WriteFile(path, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.log")

	for _, progress := range []string{"never", "always"} {
		t.Run("progress="+progress, func(t *testing.T) {
			var shared bytes.Buffer
			code := run([]string{"scan", "--progress", progress, path, missing}, strings.NewReader(""), &shared, &shared)
			if code != exitUsage {
				t.Fatalf("exit status %d, want %d (the second input is missing)", code, exitUsage)
			}
			// A terminal shows what follows the last "clear line" sequence
			// of each line.
			lines := strings.Split(shared.String(), "\n")
			if last := lines[len(lines)-1]; strings.TrimPrefix(last, "\r\033[K") != "" {
				t.Errorf("output ends with an unterminated line %q", last)
			}
			matches, errLines := 0, 0
			for _, l := range lines[:len(lines)-1] {
				if i := strings.LastIndex(l, "\r\033[K"); i >= 0 {
					l = l[i+len("\r\033[K"):]
				}
				switch {
				case strings.HasPrefix(l, path+":") && strings.HasSuffix(l, "401 Unauthorized"):
					matches++
				case strings.HasPrefix(l, "authwatch: scan: open "+missing):
					errLines++
				case strings.HasPrefix(l, "authwatch scan: "), strings.HasPrefix(l, "  by "):
				default:
					t.Errorf("mixed output line %.200q", l)
				}
			}
			if matches != 1000 {
				t.Errorf("whole match lines = %d, want 1000", matches)
			}
			if errLines != 1 {
				t.Errorf("error lines for the missing input = %d, want 1", errLines)
			}
		})
	}
}
