//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
)

// TestDeployRBACExactlyEnough applies the chart's objects for watching
// one namespace, runs authwatch as the Deployment would, with a token of
// the ServiceAccount those objects create, and checks that it works.
// Then, for every verb of every rule of every Role, it removes that one
// verb and checks that authwatch fails with the API server's message
// naming the verb and resource: nothing granted is unused.
func TestDeployRBACExactlyEnough(t *testing.T) {
	ctx := t.Context()
	const release, ns, appNS = "rbac", "deploy-rbac", "deploy-rbac-app"
	newNamespace(t, ns)
	newNamespace(t, appNS)

	rendered := renderChart(t, release, ns, nil, append([]string{
		"watch.namespaces={" + appNS + "}",
		"watch.selector=app=town-builder",
	}, noOperatorKinds...)...)
	docs := splitManifests(t, rendered)
	var deployment appsv1.Deployment
	findDoc(t, docs, "Deployment", &deployment)
	config := configMapOf(t, docs, &deployment)
	var objects []manifestDoc
	var roles []*rbacv1.Role
	for _, d := range docs {
		switch d.Kind {
		case "Deployment":
			// Run below as a local process: the node agent runs no image.
			continue
		case "ClusterRole", "ClusterRoleBinding":
			t.Fatalf("%s %s rendered for a namespaced watch", d.Kind, d.Name)
		case "Role":
			var r rbacv1.Role
			findDoc(t, []manifestDoc{d}, "Role", &r)
			roles = append(roles, &r)
		}
		objects = append(objects, d)
	}
	if err := cluster.Apply(ctx, joinManifests(objects)); err != nil {
		t.Fatal(err)
	}
	client := cluster.Client()
	if _, err := client.AppsV1().Deployments(appNS).Create(ctx, failingClient(appNS, "town-builder"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitDeploymentAvailable(ctx, appNS, "town-builder", time.Minute); err != nil {
		t.Fatal(err)
	}
	sa := deployment.Spec.Template.Spec.ServiceAccountName
	kubeconfig, _, err := cluster.ServiceAccountKubeconfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := ""
	for _, a := range deployment.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--checkpoint-configmap="); ok {
			checkpoint = v
		}
	}
	if checkpoint == "" {
		t.Fatal("the Deployment does not name its checkpoint ConfigMap with --checkpoint-configmap")
	}
	lease := ""
	for _, a := range deployment.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--leader-election-lease="); ok {
			lease = v
		}
	}
	// Each run starts without a checkpoint and without a Lease, so that
	// it has to create both.
	deleteRuntimeObjects := func(t *testing.T) {
		err := client.CoreV1().ConfigMaps(ns).Delete(ctx, checkpoint, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if lease == "" {
			return
		}
		err = client.CoordinationV1().Leases(ns).Delete(ctx, lease, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	// Writes every second, so that both the create and the update of the
	// checkpoint happen within a few seconds.
	const fastCheckpoint = "--checkpoint-interval=1s"

	t.Run("all granted", func(t *testing.T) {
		deleteRuntimeObjects(t)
		r := runAsDeployment(t, &deployment, config, kubeconfig, nil, fastCheckpoint)
		r.waitReady(t)
		r.waitMetric(t, "authwatch_matches_total", map[string]string{"namespace": appNS, "category": "token_expired"}, 3, time.Minute)
		r.waitMetric(t, "authwatch_checkpoint_writes_total", map[string]string{"result": "success"}, 3, time.Minute)
		if out := r.output(); strings.Contains(out, "forbidden") {
			t.Errorf("authwatch logged a permission error with every permission granted:\n%s", out)
		}
	})
	if t.Failed() {
		return
	}

	subject := "system:serviceaccount:" + ns + ":" + sa
	for _, role := range roles {
		for i, rule := range role.Rules {
			for _, verb := range rule.Verbs {
				for _, resource := range rule.Resources {
					name := fmt.Sprintf("without %s %s in %s", verb, resource, role.Namespace)
					if len(rule.ResourceNames) > 0 {
						name += " named " + strings.Join(rule.ResourceNames, ",")
					}
					t.Run(name, func(t *testing.T) {
						reduced := role.DeepCopy()
						reduced.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb })
						if len(reduced.Rules[i].Verbs) == 0 {
							reduced.Rules = slices.Delete(reduced.Rules, i, i+1)
						}
						updateRole(t, reduced)
						t.Cleanup(func() {
							updateRole(t, role)
							waitAccess(t, subject, role.Namespace, rule.APIGroups[0], resource, verb, rule.ResourceNames, true)
						})
						waitAccess(t, subject, role.Namespace, rule.APIGroups[0], resource, verb, rule.ResourceNames, false)
						deleteRuntimeObjects(t)

						var env []string
						if resource == "pods" && verb == "list" {
							// client-go lists pods through a watch (a streaming
							// list) where the API server serves one, as this one
							// does. Turning that off makes authwatch list as it
							// does against servers without streaming lists,
							// which is what the list permission is for.
							env = append(env, "KUBE_FEATURE_WatchListClient=false")
						}
						r := runAsDeployment(t, &deployment, config, kubeconfig, env, fastCheckpoint)
						// The API server's Forbidden message names verb and resource;
						// JSON logs escape its quotes.
						want := fmt.Sprintf("cannot %s resource %q", verb, resource)
						err := harness.WaitFor(ctx, time.Minute, "authwatch reporting "+want, func(context.Context) (bool, error) {
							out := strings.ReplaceAll(r.output(), `\"`, `"`)
							return strings.Contains(out, want), nil
						})
						if err != nil {
							t.Fatal(err)
						}
						for _, line := range strings.Split(strings.ReplaceAll(r.output(), `\"`, `"`), "\n") {
							if strings.Contains(line, want) {
								t.Logf("authwatch reported: %s", line)
								break
							}
						}
						r.stop()
					})
				}
			}
		}
	}
}

// updateRole replaces the rules of the Role in the cluster with those of r.
func updateRole(t *testing.T, r *rbacv1.Role) {
	t.Helper()
	roles := cluster.Client().RbacV1().Roles(r.Namespace)
	cur, err := roles.Get(context.Background(), r.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Rules = r.Rules
	if _, err := roles.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitAccess waits until the API server's authorizer allows (or denies)
// the ServiceAccount user the verb on the resource, so that a changed Role
// is in effect before authwatch starts.
func waitAccess(t *testing.T, user, namespace, group, resource, verb string, names []string, allowed bool) {
	t.Helper()
	res, sub, _ := strings.Cut(resource, "/")
	saNamespace := strings.Split(user, ":")[2]
	check := func(ctx context.Context, name string) (bool, error) {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: namespace, Verb: verb, Group: group, Resource: res, Subresource: sub, Name: name,
			},
		}}
		got, err := cluster.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return got.Status.Allowed == allowed, fmt.Errorf("allowed=%v, reason %q", got.Status.Allowed, got.Status.Reason)
	}
	if len(names) == 0 {
		names = []string{""}
	}
	for _, n := range names {
		what := fmt.Sprintf("%s %s %s/%s allowed=%v", user, verb, resource, n, allowed)
		if err := harness.WaitFor(context.Background(), 30*time.Second, what, func(ctx context.Context) (bool, error) { return check(ctx, n) }); err != nil {
			t.Fatal(err)
		}
	}
}
