package watcher

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const permissionLog = "permission denied by the API server"

func TestPodLogsForbiddenReportedOnce(t *testing.T) {
	e := newEnv(t)
	e.srv.Deny("get", "pods/log")
	e.runningPod("api-1", "cri://a")
	e.runningPod("api-2", "cri://b")
	want := numbered("line", 5)
	writeLines(e.srv.Log("cri://a"), time.Now(), want)
	writeLines(e.srv.Log("cri://b"), time.Now(), want)
	var logs syncBuffer
	e.logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testConfig()
	// A long backoff period is also the log interval: one record for
	// every rejected request of the test.
	cfg.BackoffMax = Duration(time.Minute)
	e.start(cfg, nil)

	e.waitFor("6 rejected log requests", 10*time.Second, func() bool {
		return e.metric("authwatch_api_permission_errors_total", "verb", "get", "resource", "pods/log") >= 6
	})
	if got := strings.Count(logs.String(), permissionLog); got != 1 {
		t.Errorf("%d permission log records for 2 streams, want 1:\n%s", got, logs.String())
	}
	for _, want := range []string{
		"verb=get resource=pods/log namespace=ns",
		`fix="grant get on pods/log in namespace \"ns\"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "stream ended, retrying") {
		t.Errorf("each stream logged the 403 too:\n%s", logs.String())
	}
	for _, verb := range []string{"list", "watch"} {
		if got := e.metric("authwatch_api_permission_errors_total", "verb", verb, "resource", "pods"); got != 0 {
			t.Errorf("authwatch_api_permission_errors_total{verb=%q,resource=pods} = %v, want 0", verb, got)
		}
	}
	if got := e.got.total(); got != 0 {
		t.Errorf("%d lines delivered without pods/log access, want 0", got)
	}

	// Once the permission is granted, the streams read everything.
	e.srv.Allow("get", "pods/log")
	e.waitFor("10 lines", 20*time.Second, func() bool { return e.got.total() >= 10 })
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	assertExactlyOnce(t, e.got.texts("cri://b"), want)
	e.lintMetrics()
}

func TestPodListForbiddenThenAllowed(t *testing.T) {
	e := newEnv(t)
	// The reflector tries a watch list first, then falls back to a list.
	e.srv.Deny("list", "pods")
	e.srv.Deny("watch", "pods")
	e.runningPod("api-1", "cri://a")
	writeLines(e.srv.Log("cri://a"), time.Now(), []string{"one"})
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	e.reg = reg
	e.got = newCollector()
	w, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg, Client: e.client,
		Handler: e.got, Config: testConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()

	e.waitFor("a rejected list and watch", 10*time.Second, func() bool {
		return e.metric("authwatch_api_permission_errors_total", "verb", "list", "resource", "pods") >= 1 &&
			e.metric("authwatch_api_permission_errors_total", "verb", "watch", "resource", "pods") >= 1
	})
	if w.Synced() {
		t.Error("Synced() = true while listing pods is forbidden")
	}
	for _, want := range []string{"verb=list resource=pods namespace=ns", "verb=watch resource=pods namespace=ns"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}

	e.srv.Allow("list", "pods")
	e.srv.Allow("watch", "pods")
	e.waitFor("informers synced", 20*time.Second, w.Synced)
	e.waitFor("1 line", 10*time.Second, func() bool { return e.got.count("cri://a") == 1 })
}
