//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
)

// TestDeployRotationRBACExactlyEnough renders the chart with one rotation
// target, rotates that target by hand with `authwatch rotate` as the
// chart's ServiceAccount, and checks that the rotation succeeds. Then, for
// every verb of the rotation Role, it removes that one verb and checks
// that the rotation fails with the API server's message for it, and that
// authwatch names the verb, the resource and the fix.
func TestDeployRotationRBACExactlyEnough(t *testing.T) {
	ctx := t.Context()
	const release, ns, appNS, target = "rot", "deploy-rot", "deploy-rot-app", "rot-rbac"
	newNamespace(t, ns)
	newNamespace(t, appNS)
	client := cluster.Client()

	// The API accepts only the token in tokenFile. Each rotation writes a
	// new one first, so the running pods fail and the token source, which
	// prints the file, returns the one that works.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	var valid atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, _ := valid.Load().(string); v != "" && r.Header.Get("Authorization") == "Bearer "+v {
			w.Write([]byte(`{"towns":[]}`))
			return
		}
		http.Error(w, `{"detail":"Given token not valid for any token type"}`, http.StatusUnauthorized)
	}))
	t.Cleanup(api.Close)
	generation := 0
	newToken := func(t *testing.T) {
		generation++
		jwt := unsignedJWT(time.Now().Add(time.Hour + time.Duration(generation)*time.Second))
		if err := os.WriteFile(tokenFile, []byte(jwt), 0o600); err != nil {
			t.Fatal(err)
		}
		valid.Store(jwt)
	}
	newToken(t)

	values := filepath.Join(dir, "values.yaml")
	err := os.WriteFile(values, fmt.Appendf(nil, `
watch:
  namespaces: [%[1]s]
  selector: app=town-builder
rotation:
  enabled: true
  targets:
    - name: %[2]s
      "on": [token-expired]
      secret: {namespace: %[1]s, name: app-token, key: TOKEN}
      workloads: [Deployment/town-builder, Deployment/town-worker]
      restart: [{kind: Deployment, name: town-builder}]
      source:
        command: {command: [/bin/cat, %[3]s]}
      dry_run: false
      max_per_hour: 1000
      rollout_timeout: 1m
      verify_window: 3s
`, appNS, target, tokenFile), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	docs := splitManifests(t, renderChart(t, release, ns, []string{values}, noOperatorKinds...))
	var deployment appsv1.Deployment
	findDoc(t, docs, "Deployment", &deployment)
	config := configMapOf(t, docs, &deployment)
	configFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(configFile, []byte(config.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	var objects []manifestDoc
	var rotationRole *rbacv1.Role
	for _, d := range docs {
		if d.Kind == "Deployment" {
			continue
		}
		if d.Kind == "Role" && d.Namespace == appNS && strings.HasSuffix(d.Name, "-rotation") {
			rotationRole = &rbacv1.Role{}
			findDoc(t, []manifestDoc{d}, "Role", rotationRole)
		}
		objects = append(objects, d)
	}
	if rotationRole == nil {
		t.Fatalf("the chart rendered no rotation Role in namespace %s", appNS)
	}
	if err := cluster.Apply(ctx, joinManifests(objects)); err != nil {
		t.Fatal(err)
	}

	// town-builder calls the API with the token from its Secret, logs each
	// 401, and after a success checks again a second later.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "app-token"}, StringData: map[string]string{"TOKEN": "initial-token"}}
	if _, err := client.CoreV1().Secrets(appNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env := []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-token"}, Key: "TOKEN"},
	}}}
	workload := scriptDeployment(appNS, "town-builder", 1, env,
		`auth url=`+api.URL+`/api/towns/ env=TOKEN scheme=Bearer every=200ms fail="ERROR GET /api/towns/ failed: HTTP {status}: Token is invalid or expired"`,
		`emit count=5 every=200ms text="INFO GET /api/towns/ ok"`,
		`loop`)
	if _, err := client.AppsV1().Deployments(appNS).Create(ctx, workload, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(ctx, appNS, "town-builder", time.Minute); err != nil {
		t.Fatal(err)
	}
	// town-worker is a workload of the target that is not restarted and
	// keeps failing, so verification has to read its pod to tell that
	// it is not a new one.
	worker := scriptDeployment(appNS, "town-worker", 1, nil,
		`emit count=0 every=300ms text="ERROR GET /api/towns/ failed: HTTP 401 Unauthorized: Token is invalid or expired"`)
	worker.Spec.Template.Labels["app"] = "town-builder"
	worker.Spec.Template.Labels["component"] = "worker"
	worker.Spec.Selector.MatchLabels["component"] = "worker"
	if _, err := client.AppsV1().Deployments(appNS).Create(ctx, worker, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(ctx, appNS, "town-worker", time.Minute); err != nil {
		t.Fatal(err)
	}
	workerPods, err := cluster.RunningPods(ctx, appNS, "component=worker", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Creation times have whole seconds, and verification counts a pod
	// created in the second of the restart as new.
	created := workerPods[0].CreationTimestamp.Time
	err = harness.WaitFor(ctx, 5*time.Second, "a second after the worker pod's creation", func(context.Context) (bool, error) {
		return time.Now().Truncate(time.Second).After(created), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, _, err := cluster.ServiceAccountKubeconfig(ctx, ns, deployment.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}

	// rotate resets the Secret, so that no rotation state from an earlier
	// run carries over, makes the running token invalid, and rotates.
	rotate := func(t *testing.T) (string, error) {
		t.Helper()
		cur, err := client.CoreV1().Secrets(appNS).Get(ctx, "app-token", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Annotations = nil
		if _, err := client.CoreV1().Secrets(appNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		newToken(t)
		cmd := exec.CommandContext(ctx, repoBinary(t, "authwatch"), "rotate", target,
			"--config="+configFile, "--kubeconfig="+kubeconfig, "--log-level=info")
		cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns)
		out, err := cmd.CombinedOutput()
		return strings.ReplaceAll(string(out), `\"`, `"`), err
	}
	backup := "authwatch-rotation-" + target
	deleteBackup := func(t *testing.T) {
		err := client.CoreV1().Secrets(appNS).Delete(ctx, backup, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}

	// Twice: the first rotation creates the backup Secret, the second
	// updates it.
	for _, run := range []string{"first", "second"} {
		t.Run("all granted "+run, func(t *testing.T) {
			out, err := rotate(t)
			if err != nil || !strings.Contains(out, ": succeeded (") {
				t.Fatalf("authwatch rotate: %v\n%s", err, out)
			}
			got, err := client.CoreV1().Secrets(appNS).Get(ctx, "app-token", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := valid.Load().(string); string(got.Data["TOKEN"]) != want {
				t.Errorf("the Secret does not hold the token that the source returned")
			}
			if strings.Contains(out, "forbidden") {
				t.Errorf("authwatch rotate reported a permission error with every permission granted:\n%s", out)
			}
		})
	}
	if t.Failed() {
		return
	}

	subject := "system:serviceaccount:" + ns + ":" + deployment.Spec.Template.Spec.ServiceAccountName
	for i, rule := range rotationRole.Rules {
		for _, verb := range rule.Verbs {
			for _, resource := range rule.Resources {
				name := fmt.Sprintf("without %s %s", verb, resource)
				if len(rule.ResourceNames) > 0 {
					name += " named " + strings.Join(rule.ResourceNames, ",")
				}
				t.Run(name, func(t *testing.T) {
					reduced := rotationRole.DeepCopy()
					reduced.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb })
					if len(reduced.Rules[i].Verbs) == 0 {
						reduced.Rules = slices.Delete(reduced.Rules, i, i+1)
					}
					updateRole(t, reduced)
					t.Cleanup(func() {
						updateRole(t, rotationRole)
						waitAccess(t, subject, appNS, rule.APIGroups[0], resource, verb, rule.ResourceNames, true)
					})
					waitAccess(t, subject, appNS, rule.APIGroups[0], resource, verb, rule.ResourceNames, false)
					if resource == "secrets" && verb == "create" {
						// Only a missing backup Secret is created.
						deleteBackup(t)
					}
					out, _ := rotate(t)
					want := fmt.Sprintf("cannot %s resource %q", verb, resource)
					if !strings.Contains(out, want) {
						t.Fatalf("authwatch rotate did not report %q:\n%s", want, out)
					}
					for _, line := range strings.Split(out, "\n") {
						if strings.Contains(line, want) {
							t.Logf("authwatch rotate reported: %s", line)
							break
						}
					}
					// authwatch adds the verb, the resource and the rule to
					// grant, in the step's message and in one Warn record.
					for _, want := range []string{
						fmt.Sprintf("permission denied to %s %s", verb, resource),
						fmt.Sprintf("fix: grant %s on %s in namespace %q", verb, resource, appNS),
					} {
						if !strings.Contains(out, want) {
							t.Errorf("authwatch rotate did not print %q:\n%s", want, out)
						}
					}
					warns := 0
					for _, line := range strings.Split(out, "\n") {
						if strings.Contains(line, "permission denied by the API server") &&
							strings.Contains(line, "verb="+verb) && strings.Contains(line, "resource="+resource) {
							warns++
						}
					}
					if warns != 1 {
						t.Errorf("authwatch rotate logged %d permission Warn records for %s %s, want 1:\n%s", warns, verb, resource, out)
					}
				})
			}
		}
	}
}
