//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
)

func execIn(ctx context.Context, ns, pod, container string, command ...string) (stdout, stderr string, err error) {
	req := cluster.Client().CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(cluster.RESTConfig(), "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

func createPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, err := cluster.Client().CoreV1().Pods(pod.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitContainer waits until the pod's first container status satisfies ok.
func waitContainer(t *testing.T, ns, pod, what string, ok func(corev1.ContainerStatus) bool) corev1.ContainerStatus {
	t.Helper()
	var cs corev1.ContainerStatus
	err := harness.WaitFor(t.Context(), time.Minute, "pod "+pod+" "+what, func(ctx context.Context) (bool, error) {
		p, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Errorf("no container status yet, phase %q", p.Status.Phase)
		}
		cs = p.Status.ContainerStatuses[0]
		return ok(cs), fmt.Errorf("container status %+v", cs)
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestNodeAgentProcessContainer(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "process")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "marker.txt"), []byte("from the working folder\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	createPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server", Labels: map[string]string{"app": "server"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:       "main",
			Image:      nodeagent.ProcessImage,
			WorkingDir: dir,
			Command:    []string{"/bin/sh", "-c", `cat marker.txt; echo "greeting=$GREETING pod=$POD_NAME"; echo to-stderr >&2; exec sleep 300`},
			Env: []corev1.EnvVar{
				{Name: "NAME", Value: "world"},
				{Name: "GREETING", Value: "hello $(NAME)"},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			},
		}}},
	})
	if _, err := cluster.RunningPods(ctx, ns, "app=server", 1, time.Minute); err != nil {
		t.Fatal(err)
	}

	err := harness.WaitFor(ctx, 30*time.Second, "process output in the log", func(ctx context.Context) (bool, error) {
		out, err := cluster.Client().CoreV1().Pods(ns).GetLogs("server", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			return false, err
		}
		want := "from the working folder\ngreeting=hello world pod=server\n"
		got := string(out)
		return strings.HasPrefix(strings.ReplaceAll(got, "to-stderr\n", ""), want) && strings.Contains(got, "to-stderr\n"),
			fmt.Errorf("log %q, want %q and the stderr line", got, want)
	})
	if err != nil {
		t.Fatal(err)
	}

	stdout, stderr, err := execIn(ctx, ns, "server", "main", "/bin/sh", "-c", "cat marker.txt; echo $GREETING")
	if err != nil {
		t.Fatalf("exec: %v (stderr %q)", err, stderr)
	}
	if want := "from the working folder\nhello world\n"; stdout != want {
		t.Errorf("exec stdout = %q, want %q", stdout, want)
	}

	// Deleting the pod stops the process and removes the pod.
	if err := cluster.Client().CoreV1().Pods(ns).Delete(ctx, "server", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 30*time.Second, "pod server gone", func(ctx context.Context) (bool, error) {
		list, err := cluster.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(list.Items) == 0, fmt.Errorf("%d pods left", len(list.Items))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNodeAgentMissingSecretAndExit(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "secret-late")
	createPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyOnFailure,
			Containers: []corev1.Container{{
				Name:  "main",
				Image: nodeagent.ScriptImage,
				Args:  []string{`emit text="started"`, `exit 3`},
				Env: []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "late"}, Key: "token",
				}}}},
			}},
		},
	})
	waitContainer(t, ns, "client", "waiting for its Secret", func(cs corev1.ContainerStatus) bool {
		return cs.State.Waiting != nil && cs.State.Waiting.Reason == "CreateContainerConfigError" &&
			strings.Contains(cs.State.Waiting.Message, `"late"`)
	})

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "late"}, StringData: map[string]string{"token": "x"}}
	if _, err := cluster.Client().CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The script exits with 3, so OnFailure restarts it each time.
	cs := waitContainer(t, ns, "client", "restarted after exit code 3", func(cs corev1.ContainerStatus) bool {
		last := cs.LastTerminationState.Terminated
		return cs.RestartCount >= 1 && last != nil && last.ExitCode == 3 && last.Reason == "Error"
	})
	if !strings.HasPrefix(cs.LastTerminationState.Terminated.ContainerID, "authwatch://") {
		t.Errorf("container ID %q lacks the authwatch:// runtime prefix", cs.LastTerminationState.Terminated.ContainerID)
	}
}

func TestNodeAgentStallAndSinceTime(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "stall")
	createPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ticker", Labels: map[string]string{"app": "ticker"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "main",
			Image: nodeagent.ScriptImage,
			Args:  []string{`emit count=0 every=20ms text="tick {seq}"`},
		}}},
	})
	if _, err := cluster.RunningPods(ctx, ns, "app=ticker", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	stream, err := cluster.Client().CoreV1().Pods(ns).GetLogs("ticker", &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	lines := make(chan string, 10000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(within time.Duration) (string, bool) {
		select {
		case l, ok := <-lines:
			return l, ok
		case <-time.After(within):
			return "", false
		}
	}
	if _, ok := next(10 * time.Second); !ok {
		t.Fatal("no line within 10s")
	}

	resume, err := agent.StallStreams(ns, "ticker", "main")
	if err != nil {
		t.Fatal(err)
	}
	// Drain what was sent before the stall took effect, then expect
	// silence while the container goes on writing.
	for {
		if _, ok := next(500 * time.Millisecond); !ok {
			break
		}
	}
	written := len(testRecords(t, ns))
	if l, ok := next(time.Second); ok {
		t.Fatalf("stalled stream delivered %q", l)
	}
	if len(testRecords(t, ns)) <= written {
		t.Fatal("container stopped writing during the stall")
	}
	resume()
	if _, ok := next(10 * time.Second); !ok {
		t.Fatal("no line within 10s of resuming")
	}

	// sinceTime has second precision; a line at or after it is sent.
	recs := testRecords(t, ns)
	pivot := recs[len(recs)/2].Time.Truncate(time.Second)
	since := metav1.NewTime(pivot)
	out, err := cluster.Client().CoreV1().Pods(ns).GetLogs("ticker", &corev1.PodLogOptions{SinceTime: &since}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(out), "\n", 2)[0]
	for _, r := range testRecords(t, ns) {
		if !r.Time.Before(pivot) {
			if r.Text != first {
				t.Errorf("sinceTime=%s starts at %q, want %q, the first line at or after it", pivot.Format(time.RFC3339), first, r.Text)
			}
			break
		}
	}
}

// TestNodeAgentSecretVolume checks that a script reads its token from a
// Secret volume at each call and sees a patched Secret without a restart,
// as with a kubelet's volume sync.
func TestNodeAgentSecretVolume(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "volume")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer fresh" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer api.Close()

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tok"}, StringData: map[string]string{"token": "stale"}}
	if _, err := cluster.Client().CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:         "main",
				Image:        nodeagent.ScriptImage,
				Args:         []string{`auth url=` + api.URL + ` file=/var/run/tok/token every=100ms fail="denied {status}" ok="accepted"`, `sleep forever`},
				VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/var/run/tok", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tok"}}}},
		},
	})
	pods, err := cluster.RunningPods(ctx, ns, "app=client", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	restarts := pods[0].Status.ContainerStatuses[0].RestartCount
	waitRecords(t, ns, "a denied call", 30*time.Second, func(recs []nodeagent.Record) error {
		if len(recs) == 0 || recs[0].Text != "denied 401 Unauthorized" {
			return fmt.Errorf("lines %v", recs)
		}
		return nil
	})

	patch := []byte(`{"stringData":{"token":"fresh"}}`)
	if _, err := cluster.Client().CoreV1().Secrets(ns).Patch(ctx, "tok", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	recs := waitRecords(t, ns, "the call accepted after the patch", 30*time.Second, func(recs []nodeagent.Record) error {
		if len(recs) == 0 || recs[len(recs)-1].Text != "accepted" {
			return fmt.Errorf("%d lines, none accepted yet", len(recs))
		}
		return nil
	})
	for _, r := range recs {
		if r.Restart != restarts {
			t.Errorf("line %q from restart %d, want every line from restart %d: the volume changed without a restart", r.Text, r.Restart, restarts)
			break
		}
	}
}
