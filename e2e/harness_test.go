//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
)

// appDeployment returns a Deployment named name with replicas pods
// labelled app=name, each running container c under the name "app".
func appDeployment(ns, name string, replicas int32, c corev1.Container) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	c.Name = "app"
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
			},
		},
	}
}

// scriptDeployment returns a Deployment whose pods run the node agent's
// script image with steps as arguments.
func scriptDeployment(ns, name string, replicas int32, env []corev1.EnvVar, steps ...string) *appsv1.Deployment {
	return appDeployment(ns, name, replicas, corev1.Container{Image: nodeagent.ScriptImage, Args: steps, Env: env})
}

// TestHarnessLogsExecAndFaults checks the harness itself: a Deployment's
// pods run on the node agent, their logs come through the API server's
// pods/log proxy with the kubelet's options, exec works, and the fault
// hooks behave as documented.
func TestHarnessLogsExecAndFaults(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t, "harness")
	client := cluster.Client()

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"},
		StringData: map[string]string{"TOKEN": "first-token"},
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env := []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "TOKEN"},
	}}}
	d := scriptDeployment(ns, "echo", 1, env,
		`emit count=5 text="line {seq} restart {restart}"`,
		`emit count=0 every=50ms text="tick {seq}"`)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(ctx, ns, "echo", time.Minute); err != nil {
		t.Fatal(err)
	}
	pods, err := cluster.RunningPods(ctx, ns, "app=echo", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pod := pods[0].Name

	t.Run("logs with timestamps and tail", func(t *testing.T) {
		tail := int64(2)
		out, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "app", Timestamps: true, TailLines: &tail}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("tailLines=2 returned %d lines: %q", len(lines), out)
		}
		for _, l := range lines {
			ts, _, ok := strings.Cut(l, " ")
			if _, err := time.Parse(time.RFC3339Nano, ts); !ok || err != nil {
				t.Errorf("line %q does not start with an RFC 3339 timestamp", l)
			}
		}
	})

	t.Run("logs from the start", func(t *testing.T) {
		out, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(out), "line 1 restart 0\nline 2 restart 0\n") {
			t.Errorf("log starts with %q, want the script's first lines", firstBytes(out, 80))
		}
	})

	t.Run("limitBytes", func(t *testing.T) {
		limit := int64(10)
		out, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{LimitBytes: &limit}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "line 1 res" {
			t.Errorf("limitBytes=10 returned %q, want %q", out, "line 1 res")
		}
	})

	t.Run("exec sees secret env", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "app", Command: []string{"/bin/sh", "-c", `echo "token=$TOKEN"; exit 3`}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
		exec, err := remotecommand.NewSPDYExecutor(cluster.RESTConfig(), "POST", req.URL())
		if err != nil {
			t.Fatal(err)
		}
		err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
		if got := stdout.String(); got != "token=first-token\n" {
			t.Errorf("exec stdout = %q, want %q (stderr %q)", got, "token=first-token\n", stderr.String())
		}
		if err == nil || !strings.Contains(err.Error(), "exit code 3") {
			t.Errorf("exec error = %v, want exit code 3", err)
		}
	})

	t.Run("follow survives rotation and ends at cut", func(t *testing.T) {
		stream, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		sc := bufio.NewScanner(stream)
		read := func(n int) {
			for i := 0; i < n; i++ {
				if !sc.Scan() {
					t.Fatalf("stream ended after %d of %d lines: %v", i, n, sc.Err())
				}
			}
		}
		read(10)
		if err := agent.RotateLog(ns, pod, "app"); err != nil {
			t.Fatal(err)
		}
		read(5)
		// A new read after the rotation starts at the new file.
		out, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "line 1 restart 0") {
			t.Errorf("read after rotation still returns lines of the rotated file")
		}
		if err := agent.CutStreams(ns, pod, "app"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for sc.Scan() {
			if time.Now().After(deadline) {
				t.Fatal("stream still open 10s after CutStreams")
			}
		}
	})

	t.Run("restart keeps previous log", func(t *testing.T) {
		if err := agent.RestartContainer(ns, pod, "app"); err != nil {
			t.Fatal(err)
		}
		err := harness.WaitFor(ctx, 30*time.Second, "restartCount 1 and running", func(ctx context.Context) (bool, error) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			cs := p.Status.ContainerStatuses
			if len(cs) != 1 {
				return false, fmt.Errorf("%d container statuses", len(cs))
			}
			last := cs[0].LastTerminationState.Terminated
			return cs[0].RestartCount == 1 && cs[0].State.Running != nil && last != nil && last.ExitCode == 137,
				fmt.Errorf("status %+v", cs[0])
		})
		if err != nil {
			t.Fatal(err)
		}
		prev, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Previous: true}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(prev), "tick") {
			t.Errorf("previous log %q lacks the first instance's lines", firstBytes(prev, 80))
		}
		cur, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(cur), "line 1 restart 1\n") {
			t.Errorf("current log starts with %q, want the restarted instance's first line", firstBytes(cur, 80))
		}
	})

	t.Run("deleted pod is replaced", func(t *testing.T) {
		if err := client.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		pods, err := cluster.RunningPods(ctx, ns, "app=echo", 1, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if pods[0].Name == pod {
			t.Errorf("pod %s still listed after deletion", pod)
		}
	})
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

func TestHarnessNamespaceReuse(t *testing.T) {
	ctx := t.Context()
	client := cluster.Client()
	if err := cluster.CreateNamespace(ctx, "reuse"); err != nil {
		t.Fatal(err)
	}
	d := scriptDeployment("reuse", "ticker", 1, nil, `emit count=0 every=100ms text="tick {seq}"`)
	if _, err := client.AppsV1().Deployments("reuse").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.RunningPods(ctx, "reuse", "app=ticker", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, "reuse", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateNamespace(ctx, "reuse"); err != nil {
		t.Fatal(err)
	}
	ns, err := client.CoreV1().Namespaces().Get(ctx, "reuse", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.DeletionTimestamp != nil {
		t.Errorf("namespace reuse is still being deleted after CreateNamespace returned")
	}
	list, err := client.AppsV1().Deployments("reuse").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("recreated namespace holds %d Deployments of the deleted one", len(list.Items))
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, "reuse", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
