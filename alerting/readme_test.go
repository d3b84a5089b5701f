package alerting

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
)

// readmeBlock returns the fenced code block of README.md that follows
// marker.
func readmeBlock(t *testing.T, marker, lang string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), marker)
	if !ok {
		t.Fatalf("README.md lacks %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md has no %s block after %q", lang, marker)
	}
	code, _, _ := strings.Cut(rest, "```")
	return code
}

// TestReadmePythonReceiverVerifies runs the README's Python recipe on a
// real delivery: it must accept it and reject a tampered body and a wrong
// key.
func TestReadmePythonReceiverVerifies(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 not found: install the Debian package python3: %v", err)
	}
	h, rcv := webhookHarness(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "delivery", 30*time.Second, func() bool { return len(rcv.received()) == 1 })
	got := rcv.received()[0]

	script := readmeBlock(t, "<!-- webhook-verify-python -->", "python") + `
import sys
key, header = sys.argv[1].encode(), sys.argv[2]
body = sys.stdin.buffer.read()
print("valid" if verify(key, header, body) else "invalid")
`
	path := filepath.Join(t.TempDir(), "verify.py")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(key string, body []byte) string {
		t.Helper()
		cmd := exec.Command(python, path, key, got.header.Get(HeaderSignature))
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if v := run(testWebhookKey, got.body); v != "valid" {
		t.Errorf("README recipe on a real delivery = %s, want valid", v)
	}
	if v := run(testWebhookKey, append(got.body, ' ')); v != "invalid" {
		t.Errorf("README recipe on a tampered body = %s, want invalid", v)
	}
	if v := run("other-key", got.body); v != "invalid" {
		t.Errorf("README recipe with a wrong key = %s, want invalid", v)
	}
}

// TestReadmeGoReceiverVerifies compiles the README's Go recipe into a
// small program and runs it on a real delivery.
func TestReadmeGoReceiverVerifies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found in PATH: %v", err)
	}
	h, rcv := webhookHarness(t)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: sampleIncident("shop", "Deployment/api", 5), Time: t0})
	waitFor(t, "delivery", 30*time.Second, func() bool { return len(rcv.received()) == 1 })
	got := rcv.received()[0]

	src := `package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	r := httptest.NewRequest(http.MethodPost, "/hook", os.Stdin)
	r.Header.Set("Authwatch-Signature", os.Args[2])
	if _, err := verify([]byte(os.Args[1]), r); err != nil {
		fmt.Println("invalid")
		return
	}
	fmt.Println("valid")
}

` + readmeBlock(t, "### Verifying a webhook", "go")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "verify")
	build := exec.Command(goBin, "build", "-o", bin, "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("README Go recipe does not compile: %v\n%s", err, out)
	}
	run := func(key string, body []byte) string {
		t.Helper()
		cmd := exec.Command(bin, key, got.header.Get(HeaderSignature))
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("recipe: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if v := run(testWebhookKey, got.body); v != "valid" {
		t.Errorf("README Go recipe on a real delivery = %s, want valid", v)
	}
	if v := run(testWebhookKey, append(got.body, ' ')); v != "invalid" {
		t.Errorf("README Go recipe on a tampered body = %s, want invalid", v)
	}
	if v := run("other-key", got.body); v != "invalid" {
		t.Errorf("README Go recipe with a wrong key = %s, want invalid", v)
	}
}
