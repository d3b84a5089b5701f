package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WaitFor calls cond every 100ms until it returns true or timeout passes.
// The error on timeout names what and the last error cond returned, so
// conditions return their progress as an error (with false) to explain a
// timeout. Such errors do not end the wait, because API calls fail for a
// moment while the API server restarts; an error that wraps
// ErrStopWaiting ends it at once.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if errors.Is(err, ErrStopWaiting) {
			return fmt.Errorf("harness: wait for %s: %w", what, err)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("harness: %s not reached within %s: last error: %w", what, timeout, last)
			}
			return fmt.Errorf("harness: %s not reached within %s", what, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ErrStopWaiting, wrapped in a condition's error, ends WaitFor at once.
var ErrStopWaiting = errors.New("condition cannot be met")

// CreateNamespace creates a namespace and waits until the controllers have
// created its default ServiceAccount, without which the API server rejects
// pods. An existing namespace is kept, unless it is being deleted: then
// CreateNamespace waits until it is gone and creates it again, so that
// tests may reuse a name that an earlier test deleted.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	err := WaitFor(ctx, 2*time.Minute, "namespace "+name+" created", func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		if err == nil {
			return true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return false, err
		}
		cur, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if cur.DeletionTimestamp == nil {
			return true, nil
		}
		return false, fmt.Errorf("namespace %s is still being deleted", name)
	})
	if err != nil {
		return err
	}
	return c.waitServiceAccount(ctx, name, "default")
}

func (c *Cluster) waitServiceAccount(ctx context.Context, namespace, name string) error {
	return WaitFor(ctx, time.Minute, "ServiceAccount "+namespace+"/"+name, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil, err
	})
}

// Kubectl runs the version-matched kubectl with the admin kubeconfig and
// returns its standard output; the error includes its standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return c.KubectlAs(ctx, c.Kubeconfig(), args...)
}

// KubectlAs runs kubectl with the given kubeconfig.
func (c *Cluster) KubectlAs(ctx context.Context, kubeconfig string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("harness: kubectl %v: %w: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Apply applies YAML or JSON manifests (several documents are fine) with
// `kubectl apply` as the admin.
func (c *Cluster) Apply(ctx context.Context, manifest []byte) error {
	f, err := os.CreateTemp(c.dir, "manifest-*.yaml")
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(manifest); err != nil {
		f.Close()
		return fmt.Errorf("harness: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	_, err = c.Kubectl(ctx, "apply", "-f", f.Name())
	return err
}

// ApplyFiles applies manifest files or folders (kubectl apply -f each).
// A folder with a kustomization.yaml is applied with -k.
func (c *Cluster) ApplyFiles(ctx context.Context, paths ...string) error {
	for _, p := range paths {
		flag := "-f"
		if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err == nil {
			flag = "-k"
		}
		if _, err := c.Kubectl(ctx, "apply", flag, p); err != nil {
			return err
		}
	}
	return nil
}

// WaitDeploymentAvailable waits until the Deployment's latest generation is
// observed, fully rolled out and all its replicas are available.
func (c *Cluster) WaitDeploymentAvailable(ctx context.Context, namespace, name string, timeout time.Duration) error {
	return WaitFor(ctx, timeout, "Deployment "+namespace+"/"+name+" rolled out", func(ctx context.Context) (bool, error) {
		d, err := c.client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return deploymentComplete(d), fmt.Errorf("status: %d/%d updated, %d available, %d total, generation %d observed %d",
			d.Status.UpdatedReplicas, replicas(d), d.Status.AvailableReplicas, d.Status.Replicas, d.Generation, d.Status.ObservedGeneration)
	})
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func deploymentComplete(d *appsv1.Deployment) bool {
	want := replicas(d)
	return d.Status.ObservedGeneration >= d.Generation &&
		d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want &&
		d.Status.AvailableReplicas == want
}

// RunningPods waits until exactly n pods match selector in namespace, all
// Running and Ready and none being deleted, and returns them.
func (c *Cluster) RunningPods(ctx context.Context, namespace, selector string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := WaitFor(ctx, timeout, fmt.Sprintf("%d running pods %q in %s", n, selector, namespace), func(ctx context.Context) (bool, error) {
		list, err := c.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
				pods = append(pods, p)
			}
		}
		return len(pods) == n && len(list.Items) == n, fmt.Errorf("%d pods listed, %d running and ready", len(list.Items), len(pods))
	})
	return pods, err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setupRBAC gives the node agent's identity what a kubelet and a scheduler
// would have for the pods on its nodes.
func (c *Cluster) setupRBAC(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "authwatch-e2e:node-agent"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"pods/binding"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets", "configmaps"}, Verbs: []string{"get"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "authwatch-e2e:node-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: NodeAgentUser}},
	}
	return WaitFor(ctx, 30*time.Second, "node agent RBAC created", func(ctx context.Context) (bool, error) {
		_, err := c.client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return false, err
		}
		_, err = c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return false, err
		}
		return true, nil
	})
}
