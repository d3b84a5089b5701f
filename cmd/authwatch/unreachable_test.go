package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestRetryWhileUnreachable(t *testing.T) {
	// client-go returns a *url.Error when the connection fails.
	transport := &url.Error{Op: "Get", URL: "https://127.0.0.1:1/", Err: &os.SyscallError{Syscall: "connect", Err: errors.New("connection refused")}}
	unavailable := apierrors.NewServiceUnavailable("etcd is down")
	badState := errors.New("checkpoint: invalid incidents section")
	tests := []struct {
		name      string
		errs      []error // returned by the attempts in turn, then success
		wantErr   error
		wantWarns int
	}{
		{"first try", nil, nil, 0},
		{"transport then success", []error{fmt.Errorf("read: %w", transport), fmt.Errorf("read: %w", transport)}, nil, 2},
		{"status then success", []error{unavailable}, nil, 1},
		{"forbidden then success", []error{apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "c", errors.New("rbac"))}, nil, 1},
		{"other error", []error{badState}, badState, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs bytes.Buffer
				log := slog.New(slog.NewTextHandler(&logs, nil))
				calls := 0
				start := time.Now()
				got, err := retryWhileUnreachable(t.Context(), log, "the kubeconfig", func(context.Context) (int, error) {
					calls++
					if calls <= len(tc.errs) {
						return 0, tc.errs[calls-1]
					}
					return 42, nil
				})
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if err == nil && got != 42 {
					t.Errorf("value = %d, want 42", got)
				}
				if n := strings.Count(logs.String(), "level=WARN msg=\"api server request failed at start, retrying\""); n != tc.wantWarns {
					t.Errorf("%d warnings, want %d; log:\n%s", n, tc.wantWarns, logs.String())
				}
				if tc.wantWarns > 0 && !strings.Contains(logs.String(), "check=\"the kubeconfig\"") {
					t.Errorf("log lacks what to check:\n%s", logs.String())
				}
				// Backoff: 250ms-500ms, then 500ms-1s.
				if elapsed := time.Since(start); tc.wantWarns == 2 && (elapsed < 750*time.Millisecond || elapsed > 1500*time.Millisecond) {
					t.Errorf("two retries took %s, want 750ms to 1.5s", elapsed)
				}
			})
		})
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		go func() {
			time.Sleep(10 * time.Second)
			cancel()
		}()
		_, err := retryWhileUnreachable(ctx, slog.New(slog.DiscardHandler), "", func(context.Context) (int, error) {
			calls++
			return 0, apierrors.NewServiceUnavailable("down")
		})
		if err != nil || ctx.Err() == nil {
			t.Errorf("err = %v, ctx err = %v; want nil and a cancelled context", err, ctx.Err())
		}
		// 0.25-0.5 + 0.5-1 + 1-2 + 2-4 + 4-8 s of backoff fit in 10s at
		// most 6 times and at least 4 times.
		if calls < 4 || calls > 6 {
			t.Errorf("%d attempts in 10s, want 4 to 6", calls)
		}
	})
}

// An API server that refuses connections at start must not stop run: it
// retries, stays not ready and stops cleanly when asked.
func TestRunWaitsForUnreachableAPIServer(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	server := "https://" + freeAddr(t) // closed port on 127.0.0.1
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: test}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns}}]
current-context: x
`, server)
	if err := os.WriteFile(kubeconfig, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var stderr syncBuffer
	root := newRootCmd(strings.NewReader(""), io.Discard, &stderr)
	root.SetArgs([]string{"run", "--kubeconfig", kubeconfig, "--listen-address", addr, "--log-format", "json"})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	waitUntil(t, "two retries logged", func() bool {
		return strings.Count(stderr.String(), `"msg":"api server request failed at start, retrying"`) >= 2
	})
	line := ""
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "retrying") {
			line = l
			break
		}
	}
	for _, want := range []string{`"level":"WARN"`, "connection refused", "--kubeconfig and --context", "--kubeconfig=" + kubeconfig} {
		if !strings.Contains(line, want) {
			t.Errorf("retry log lacks %q: %s", want, line)
		}
	}
	if code, body := get("http://" + addr + "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d %q while the API server is unreachable, want 503", code, body)
	}
	if code, _ := get("http://" + addr + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while retrying, want 200", code)
	}
	select {
	case err := <-done:
		t.Fatalf("run returned while retrying: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop within 20s of cancel")
	}
}
