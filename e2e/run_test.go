//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
)

const workload = "Deployment/town-builder"

// expiredLine is what the town-builder client logs when the API rejects
// its token; the default rule pack classifies it as token_expired.
const expiredLine = `ERROR town-builder: GET http://api.town.test/api/towns/ returned 401 Unauthorized: {"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"message":"Token is expired"}]}`

// quoteArg quotes s as one value of a node agent script step.
func quoteArg(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func createTownBuilder(t *testing.T, ns string, replicas int32, steps ...string) {
	t.Helper()
	d := scriptDeployment(ns, "town-builder", replicas, nil, steps...)
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(t.Context(), ns, "town-builder", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// waitRecords waits until the lines the containers of ns wrote since the
// test began satisfy done, and returns them. Lines of an earlier test's
// namespace of the same name are older, so they are left out.
func waitRecords(t *testing.T, ns, what string, timeout time.Duration, done func([]nodeagent.Record) error) []nodeagent.Record {
	t.Helper()
	var recs []nodeagent.Record
	err := harness.WaitFor(t.Context(), timeout, what, func(context.Context) (bool, error) {
		recs = testRecords(t, ns)
		err := done(recs)
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// perInstance counts records by container ID.
func perInstance(recs []nodeagent.Record) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[r.ContainerID]++
	}
	return n
}

func TestRunCountsLinesAndMatches(t *testing.T) {
	ns := newNamespace(t, "town-builder")
	kubeconfig := applyDeployRBAC(t)
	d := startAuthwatch(t, kubeconfig, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	// Each pod writes 10 rounds of 3 normal lines and one 401: 40 lines.
	createTownBuilder(t, ns, 2,
		`emit count=3 every=20ms text="INFO town-builder: built house {seq}"`,
		"emit text="+quoteArg(expiredLine),
		`loop times=9`,
		`sleep forever`)
	recs := waitRecords(t, ns, "both pods writing 40 lines", time.Minute, func(recs []nodeagent.Record) error {
		n := perInstance(recs)
		if len(n) != 2 {
			return fmt.Errorf("%d container instances wrote lines", len(n))
		}
		for id, c := range n {
			if c != 40 {
				return fmt.Errorf("instance %s wrote %d of 40 lines", id, c)
			}
		}
		return nil
	})
	wantLines, wantMatches := expectedCounts(t, recs)
	if len(wantMatches) == 0 {
		t.Fatalf("the default rules match none of the test lines: %v", wantMatches)
	}
	waitLineCount(t, d, ns, workload, func() int { return wantLines }, time.Minute)

	s, err := d.metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range wantMatches {
		labels := map[string]string{"rule": key[0], "category": key[1], "namespace": ns, "workload": workload}
		if got := s.sum("authwatch_matches_total", labels); int(got) != want {
			t.Errorf("authwatch_matches_total%v = %v, want %d", labels, got, want)
		}
	}
	if got := s.sum("authwatch_matches_total", map[string]string{"category": "token_expired", "namespace": ns}); got < 20 {
		t.Errorf("token_expired matches = %v, want at least the 20 expired-token lines", got)
	}
}

func TestRunFollowsRolloutRestart(t *testing.T) {
	ns := newNamespace(t, "rollout")
	kubeconfig := applyDeployRBAC(t)
	d := startAuthwatch(t, kubeconfig, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	createTownBuilder(t, ns, 2,
		`emit count=100 every=50ms text="INFO town-builder: request {seq} restart {restart}"`,
		`sleep forever`)
	old := waitRecords(t, ns, "old pods writing", time.Minute, func(recs []nodeagent.Record) error {
		if len(recs) < 40 {
			return fmt.Errorf("%d lines so far", len(recs))
		}
		return nil
	})
	oldPods := map[types.UID]bool{}
	for _, r := range old {
		oldPods[r.PodUID] = true
	}

	if _, err := cluster.Kubectl(t.Context(), "-n", ns, "rollout", "restart", "deployment/town-builder"); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Kubectl(t.Context(), "-n", ns, "rollout", "status", "deployment/town-builder", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	// The new pods finish their 100 lines; the old ones were stopped
	// part-way.
	recs := waitRecords(t, ns, "new pods writing 100 lines each", time.Minute, func(recs []nodeagent.Record) error {
		newCount := map[types.UID]int{}
		for _, r := range recs {
			if !oldPods[r.PodUID] {
				newCount[r.PodUID]++
			}
		}
		if len(newCount) != 2 {
			return fmt.Errorf("%d new pods wrote lines", len(newCount))
		}
		for uid, n := range newCount {
			if n != 100 {
				return fmt.Errorf("new pod %s wrote %d of 100 lines", uid, n)
			}
		}
		return nil
	})
	if len(recs) <= 200 {
		t.Fatalf("old pods wrote %d lines; the test needs some", len(recs)-200)
	}
	waitLineCount(t, d, ns, workload, func() int { return len(recs) }, time.Minute)
}

func TestRunExactlyOnceAcrossRestartAndCut(t *testing.T) {
	ns := newNamespace(t, "faults")
	kubeconfig := applyDeployRBAC(t)
	d := startAuthwatch(t, kubeconfig, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	createTownBuilder(t, ns, 1,
		`emit count=200 every=20ms text="INFO town-builder: step {seq} restart {restart}"`,
		`sleep forever`)
	pods, err := cluster.RunningPods(t.Context(), ns, "app=town-builder", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pod := pods[0].Name
	labels := map[string]string{"namespace": ns, "workload": workload}
	waitCounted := func(n float64) {
		t.Helper()
		err := harness.WaitFor(t.Context(), time.Minute, fmt.Sprintf("authwatch counting %v lines", n), func(ctx context.Context) (bool, error) {
			s, err := d.metrics(ctx)
			if err != nil {
				return false, err
			}
			got := s.sum("authwatch_log_lines_total", labels)
			return got >= n, fmt.Errorf("counted %v", got)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	waitCounted(30)
	if err := agent.CutStreams(ns, pod, "app"); err != nil {
		t.Fatal(err)
	}
	waitCounted(80)
	if err := agent.RestartContainer(ns, pod, "app"); err != nil {
		t.Fatal(err)
	}
	recs := waitRecords(t, ns, "restarted container writing 200 lines", time.Minute, func(recs []nodeagent.Record) error {
		n := 0
		for _, r := range recs {
			if r.Restart == 1 {
				n++
			}
		}
		if n != 200 {
			return fmt.Errorf("restarted instance wrote %d of 200 lines", n)
		}
		return nil
	})
	waitLineCount(t, d, ns, workload, func() int { return len(recs) }, time.Minute)
}

func TestRunReportsMissingLogPermission(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "no-log-access")
	client := cluster.Client()
	// The ServiceAccount may watch pods but not read their logs.
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pods-only"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create", "update", "patch"}},
		},
	}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pods-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pods-only"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "watcher"}},
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, _, err := cluster.ServiceAccountKubeconfig(ctx, ns, "watcher")
	if err != nil {
		t.Fatal(err)
	}
	createTownBuilder(t, ns, 1, `emit count=0 every=200ms text="INFO town-builder: working {seq}"`)
	d := startAuthwatch(t, kubeconfig, "-n", ns, "-l", "app=town-builder", "--checkpoint-namespace="+ns)

	// The rejected request is counted by verb and resource, and logged
	// with both, the fix and the API server's message.
	rejected := map[string]string{"verb": "get", "resource": "pods/log"}
	wantLog := []string{
		`msg="permission denied by the API server"`,
		`verb=get resource=pods/log namespace=` + ns,
		`fix="grant get on pods/log in namespace \"` + ns + `\"`,
		`forbidden: User \"system:serviceaccount:` + ns + `:watcher\" cannot get resource \"pods/log\"`,
	}
	err = harness.WaitFor(ctx, time.Minute, "a permission error reported", func(ctx context.Context) (bool, error) {
		s, err := d.metrics(ctx)
		if err != nil {
			return false, err
		}
		counted := s.sum("authwatch_api_permission_errors_total", rejected)
		out := d.output()
		var missing []string
		for _, w := range wantLog {
			if !strings.Contains(out, w) {
				missing = append(missing, w)
			}
		}
		return counted >= 1 && len(missing) == 0,
			fmt.Errorf("authwatch_api_permission_errors_total{verb=\"get\",resource=\"pods/log\"} = %v; log lacks %q", counted, missing)
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.sum("authwatch_log_lines_total", map[string]string{"namespace": ns}); got != 0 {
		t.Errorf("authwatch_log_lines_total = %v without pods/log access, want 0", got)
	}
	for _, verb := range []string{"list", "watch"} {
		if got := s.sum("authwatch_api_permission_errors_total", map[string]string{"verb": verb, "resource": "pods"}); got != 0 {
			t.Errorf("authwatch_api_permission_errors_total{verb=%q,resource=\"pods\"} = %v with pods allowed, want 0", verb, got)
		}
	}
	if got := s.sum("authwatch_stream_errors_total", map[string]string{"kind": "open"}); got < 1 {
		t.Errorf("authwatch_stream_errors_total{kind=\"open\"} = %v after a rejected log request, want >= 1", got)
	}
	if body, code, err := d.get(ctx, "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz after the permission error = %d %q, %v; want 200", code, body, err)
	}
	if !d.running() {
		t.Errorf("authwatch exited after a permission error: %v", d.waitErr)
	}
}

func TestRunSurvivesAPIServerOutage(t *testing.T) {
	ns := newNamespace(t, "outage")
	kubeconfig := applyDeployRBAC(t)
	d := startAuthwatch(t, kubeconfig, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	createTownBuilder(t, ns, 2,
		`emit count=300 every=100ms text="INFO town-builder: tick {seq}"`,
		"emit text="+quoteArg(expiredLine),
		`sleep forever`)
	waitRecords(t, ns, "pods writing", time.Minute, func(recs []nodeagent.Record) error {
		if len(recs) < 40 {
			return fmt.Errorf("%d lines so far", len(recs))
		}
		return nil
	})
	pid := d.cmd.Process.Pid

	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// The outage itself lasts 10 s; nothing waits on it.
	time.Sleep(10 * time.Second)
	if err := cluster.StartAPIServer(t.Context()); err != nil {
		t.Fatal(err)
	}

	recs := waitRecords(t, ns, "both pods writing 301 lines", 2*time.Minute, func(recs []nodeagent.Record) error {
		n := perInstance(recs)
		for id, c := range n {
			if c != 301 {
				return fmt.Errorf("instance %s wrote %d of 301 lines", id, c)
			}
		}
		if len(n) != 2 {
			return fmt.Errorf("%d instances wrote lines", len(n))
		}
		return nil
	})
	waitLineCount(t, d, ns, workload, func() int { return len(recs) }, 2*time.Minute)
	if !d.running() || d.cmd.Process.Pid != pid {
		t.Errorf("authwatch did not keep running through the outage: %v", d.waitErr)
	}
}

func TestRunReopensStalledStream(t *testing.T) {
	ns := newNamespace(t, "stalled")
	kubeconfig := applyDeployRBAC(t)
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte("watch:\n  stall_min: 2s\n  stall_max: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startAuthwatch(t, kubeconfig, "--config="+config, "-n", ns, "-l", "app=town-builder",
		"--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=authwatch")

	createTownBuilder(t, ns, 1,
		`emit count=300 every=20ms text="INFO town-builder: step {seq}"`,
		`sleep forever`)
	pods, err := cluster.RunningPods(t.Context(), ns, "app=town-builder", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	waitRecords(t, ns, "pod writing", time.Minute, func(recs []nodeagent.Record) error {
		if len(recs) < 20 {
			return fmt.Errorf("%d lines so far", len(recs))
		}
		return nil
	})

	resume, err := agent.StallStreams(ns, pods[0].Name, "app")
	if err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(t.Context(), time.Minute, "authwatch reopening the stalled stream", func(ctx context.Context) (bool, error) {
		s, err := d.metrics(ctx)
		if err != nil {
			return false, err
		}
		n := s.sum("authwatch_stream_reconnects_total", map[string]string{"reason": "stall"})
		return n >= 1, fmt.Errorf("authwatch_stream_reconnects_total{reason=\"stall\"} = %v", n)
	})
	resume()
	if err != nil {
		t.Fatal(err)
	}
	recs := waitRecords(t, ns, "pod writing 300 lines", time.Minute, func(recs []nodeagent.Record) error {
		if len(recs) != 300 {
			return fmt.Errorf("%d of 300 lines", len(recs))
		}
		return nil
	})
	waitLineCount(t, d, ns, workload, func() int { return len(recs) }, time.Minute)
}
