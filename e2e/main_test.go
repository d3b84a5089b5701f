//go:build e2e

// Package e2e holds the end-to-end tests. They run against a real control
// plane started by the harness package and need the cluster binaries:
// `make test-e2e` builds them and sets AUTHWATCH_KUBE_BIN.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
)

// The tests share one cluster and one node agent; each test works in a
// namespace of its own.
var (
	cluster *harness.Cluster
	agent   *nodeagent.Agent
)

// testUsers are the static-token identities tests may use.
var testUsers = []string{"e2e-viewer"}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx := context.Background()
	start := time.Now()
	binDir, err := os.MkdirTemp("", "authwatch-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if authwatchBin, err = buildAuthwatch(binDir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	cluster, err = harness.Start(ctx, harness.Options{
		Users: testUsers,
		Logf:  func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start cluster: %v\n", err)
		return 1
	}
	defer cluster.Stop()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	agent, err = cluster.StartNodeAgent(ctx, harness.AgentOptions{Nodes: []string{"node-1", "node-2"}, Logger: logger})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start node agent: %v\n", err)
		cluster.DumpLogs(os.Stderr)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: cluster and node agent ready in %s\n", time.Since(start).Round(time.Millisecond))

	code := m.Run()
	if code != 0 {
		cluster.DumpLogs(os.Stderr)
	}
	return code
}

// testStarts holds when each test created its first namespace, to tell
// its containers' lines from those of an earlier namespace of the same
// name.
var testStarts sync.Map // *testing.T -> time.Time

// testRecords returns the lines the containers of ns wrote since the test
// created its first namespace.
func testRecords(t *testing.T, ns string) []nodeagent.Record {
	v, ok := testStarts.Load(t)
	if !ok {
		t.Fatalf("testRecords(%q) called before newNamespace", ns)
	}
	start := v.(time.Time)
	return agent.Records(ns, func(r nodeagent.Record) bool { return !r.Time.Before(start) })
}

// newNamespace creates a namespace for the test and returns its name.
// The namespace is deleted when the test ends, which stops its pods, so
// that endless scripts do not load the tests after it.
func newNamespace(t *testing.T, name string) string {
	t.Helper()
	if err := cluster.CreateNamespace(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if _, loaded := testStarts.LoadOrStore(t, time.Now()); !loaded {
		t.Cleanup(func() { testStarts.Delete(t) })
	}
	t.Cleanup(func() {
		err := cluster.Client().CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}
