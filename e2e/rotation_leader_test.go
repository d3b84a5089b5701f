//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/remediation"
)

// leaseHolderPID returns the process id in the Lease holder's identity,
// which is "<host>_<pid>" outside a pod.
func leaseHolderPID(ctx context.Context, ns, name string) (int, error) {
	lease, err := cluster.Client().CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return 0, fmt.Errorf("the Lease has no holder")
	}
	id := *lease.Spec.HolderIdentity
	return strconv.Atoi(id[strings.LastIndex(id, "_")+1:])
}

// TestRotationTwoReplicasOneRotation runs two replicas against one
// cluster: exactly one rotates. Killing the leader while it verifies, and
// restarting it, cause no second rotation; the new leader only verifies,
// read-only, and reports.
func TestRotationTwoReplicasOneRotation(t *testing.T) {
	ns := newNamespace(t, "rot-leader")
	api := startIribala(t, ns, 2*time.Minute)
	broken := api.brokenJWT(t)
	createRotationSecrets(t, api, broken)
	startClient(t, api, "Bearer", 1)

	config := rotationConfig(t, ns, false, httpSourceYAML(api), "")
	args := []string{"--config=" + config, "--checkpoint-configmap=authwatch-checkpoint", "--checkpoint-namespace=" + ns,
		"--leader-election-lease=authwatch-leader", "--leader-election-namespace=" + ns,
		"--leader-election-lease-duration=4s", "--leader-election-renew-deadline=3s", "--leader-election-retry-period=500ms"}
	first := startAuthwatch(t, cluster.Kubeconfig(), args...)
	err := harness.WaitFor(t.Context(), time.Minute, "the first replica leading", func(ctx context.Context) (bool, error) {
		pid, err := leaseHolderPID(ctx, ns, "authwatch-leader")
		return err == nil && pid == first.cmd.Process.Pid, fmt.Errorf("holder pid %d (%v)", pid, err)
	})
	if err != nil {
		t.Fatal(err)
	}
	second := startAuthwatch(t, cluster.Kubeconfig(), args...)

	// Kill the leader once its rotation has patched, restarted and
	// started verifying.
	err = harness.WaitFor(t.Context(), 2*time.Minute, "the rotation at step verify", func(ctx context.Context) (bool, error) {
		var j struct {
			Step string `json:"step"`
		}
		raw := getTargetSecret(t, ns).Annotations[remediation.AnnotationJournal]
		_ = json.Unmarshal([]byte(raw), &j)
		return j.Step == string(remediation.StepVerify), fmt.Errorf("journal %s", raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done

	// The standby takes over, verifies the rotation in flight and reports.
	waitRotations(t, []*daemon{second}, "succeeded", 1, time.Minute)
	if !strings.Contains(second.output(), "resuming rotation left in flight, read-only") {
		t.Error("the new leader did not resume the rotation in flight")
	}
	restarted := startAuthwatch(t, cluster.Kubeconfig(), args...)
	time.Sleep(10 * time.Second) // a window for a wrong second rotation; nothing to wait for

	sec := getTargetSecret(t, ns)
	if h := rotationHistory(sec); len(h) != 1 {
		t.Errorf("rotation history %v, want exactly one rotation", h)
	}
	token := string(sec.Data[rotKey])
	if code, _, err := api.get(t.Context(), "api/towns/", "Bearer "+token); err != nil || code != 200 {
		t.Errorf("the rotated token: HTTP %d (%v), want 200", code, err)
	}
	rsList, err := cluster.Client().AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + townBuilder})
	if err != nil {
		t.Fatal(err)
	}
	if len(rsList.Items) != 2 {
		t.Errorf("%d ReplicaSets of town-builder, want 2 (one restart)", len(rsList.Items))
	}
	for _, d := range []*daemon{second, restarted} {
		s, err := d.metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got := s.sum("authwatch_token_rotations_total", map[string]string{"target": rotTarget, "result": "failed"}); got != 0 {
			t.Errorf("replica pid %d counts %v failed rotations", d.cmd.Process.Pid, got)
		}
	}
	if strings.Contains(second.output(), `msg="rotation step" component=remediation target=`+rotTarget) &&
		strings.Contains(second.output(), "step=patch state=done") {
		t.Error("the standby patched the Secret")
	}
	for _, d := range []*daemon{first, second, restarted} {
		checkNoTokenIn(t, "replica output", d.output(), broken, token, api.password)
	}
}
