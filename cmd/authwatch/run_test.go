package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/internal/kubetest"
)

// syncBuffer is a bytes.Buffer safe for the daemon's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemon runs `authwatch run` with args against srv until the test
// ends, and returns the metrics address and the log output.
func startDaemon(t *testing.T, srv *kubetest.Server, args ...string) (string, *syncBuffer, func() int) {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, srv.Kubeconfig("ns"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var stderr syncBuffer
	root := newRootCmd(strings.NewReader(""), io.Discard, &stderr)
	root.SetArgs(append([]string{"run", "--kubeconfig", kubeconfig, "--listen-address", addr,
		"--checkpoint-namespace", "authwatch", "--checkpoint-interval", "200ms", "--log-format", "json"}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		code := exitOK
		if err != nil {
			code = 1
			fmt.Fprintf(&stderr, "run: %v\n", err)
		}
		done <- code
	}()
	stopped := false
	stop := func() int {
		if stopped {
			return exitOK
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(20 * time.Second):
			t.Errorf("authwatch run did not stop within 20s; log:\n%s", stderr.String())
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return addr, &stderr, stop
}

func TestRunCountsMatchesAndServesEndpoints(t *testing.T) {
	srv, err := kubetest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	pod := kubetest.NewPod("ns", "api-5f7c9d8b4-x2x9z", "1", map[string]string{"app": "api", "pod-template-hash": "5f7c9d8b4"}, "app")
	pod.OwnerReferences = ownerRS("api-5f7c9d8b4")
	kubetest.SetRunning(pod, "app", "cri://a", time.Now().Add(-time.Minute), false)
	srv.AddPod(pod)
	now := time.Now()
	log := srv.Log("cri://a")
	log.Write(now, "GET /healthz 200")
	log.Write(now.Add(time.Millisecond), "calling the billing API: jwt expired")

	addr, stderr, stop := startDaemon(t, srv, "-n", "ns", "-l", "app=api")
	waitUntil(t, "/readyz ok", func() bool { code, _ := get("http://" + addr + "/readyz"); return code == http.StatusOK })
	if code, body := get("http://" + addr + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}
	var metrics string
	waitUntil(t, "the match counted", func() bool {
		_, metrics = get("http://" + addr + "/metrics")
		return strings.Contains(metrics, `authwatch_matches_total{category="token_expired",namespace="ns",rule="token-expired",workload="Deployment/api"} 1`)
	})
	for _, want := range []string{
		`authwatch_log_lines_total{namespace="ns",workload="Deployment/api"} 2`,
		`authwatch_streams{state="streaming"} 1`,
		`authwatch_streams{state="queued"} 0`,
		`authwatch_stream_reconnects_total{reason="eof"} 0`,
		`authwatch_log_lines_dropped_total{reason="kubelet_error_text"} 0`,
		`authwatch_config_last_reload_successful 1`,
		`authwatch_build_info{goversion="go`,
		`authwatch_line_match_lag_seconds_count 2`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A graceful stop writes the resume point; a restart repeats nothing.
	if code := stop(); code != exitOK {
		t.Fatalf("run exited %d; log:\n%s", code, stderr.String())
	}
	cm := srv.ConfigMap("authwatch", "authwatch-checkpoint")
	if cm == nil || len(cm.BinaryData["watch"]) == 0 {
		t.Fatalf("no watch checkpoint after the stop; log:\n%s", stderr.String())
	}
	log.Write(now.Add(2*time.Millisecond), "GET /token 401 Unauthorized")
	addr2, stderr2, _ := startDaemon(t, srv, "-n", "ns", "-l", "app=api")
	waitUntil(t, "the new line counted", func() bool {
		_, metrics = get("http://" + addr2 + "/metrics")
		return strings.Contains(metrics, `authwatch_log_lines_total{namespace="ns",workload="Deployment/api"} 1`)
	})
	time.Sleep(200 * time.Millisecond)
	_, metrics = get("http://" + addr2 + "/metrics")
	if !strings.Contains(metrics, `authwatch_log_lines_total{namespace="ns",workload="Deployment/api"} 1`) {
		t.Errorf("restart read old lines again; log:\n%s", stderr2.String())
	}
	if strings.Contains(metrics, `rule="token-expired"`) {
		t.Error("restart matched the token-expired line again")
	}
	for _, line := range strings.Split(stderr.String()+stderr2.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("error logged: %s", line)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-l", "app in ("}, "-l/--selector: invalid label selector"},
		{[]string{"run", "--log-format", "xml"}, `invalid --log-format "xml"`},
		{[]string{"run", "-A", "-n", "x"}, `-A/--all-namespaces cannot be combined with -n/--namespace "x"`},
		{[]string{"run", "--config", "/nonexistent/authwatch.yaml"}, "read config"},
	} {
		var stderr bytes.Buffer
		code := run(tc.args, strings.NewReader(""), io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), exitUsage, tc.want)
		}
	}
}

func ownerRS(name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name, UID: "rs-uid", Controller: &yes}}
}
