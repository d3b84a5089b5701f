//go:build e2e

package e2e

import (
	"maps"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/remediation"
)

// TestRotationDryRunChangesNothing runs the expired-JWT scenario with
// dry_run: authwatch reports the plan and writes nothing to the cluster.
func TestRotationDryRunChangesNothing(t *testing.T) {
	ns := newNamespace(t, "rot-dry")
	api := startIribala(t, ns, 8*time.Second)
	initial := api.obtainJWT(t)
	createRotationSecrets(t, api, initial)
	startClient(t, api, "Bearer", 1)
	before := getTargetSecret(t, ns)
	dep, err := cluster.Client().AppsV1().Deployments(ns).Get(t.Context(), townBuilder, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := startAuthwatch(t, cluster.Kubeconfig(), "--config="+rotationConfig(t, ns, true, httpSourceYAML(api), ""), "--checkpoint-configmap=")

	waitFirstFailure(t, ns, time.Minute)
	waitRotations(t, []*daemon{d}, "dry_run", 1, time.Minute)

	after := getTargetSecret(t, ns)
	if after.ResourceVersion != before.ResourceVersion || string(after.Data[rotKey]) != initial || !maps.Equal(after.Annotations, before.Annotations) {
		t.Errorf("the dry run changed the Secret: annotations %v", after.Annotations)
	}
	depAfter, err := cluster.Client().AppsV1().Deployments(ns).Get(t.Context(), townBuilder, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if depAfter.Generation != dep.Generation || depAfter.Spec.Template.Annotations[remediation.AnnotationRestartedAt] != "" {
		t.Errorf("the dry run restarted the Deployment (generation %d → %d)", dep.Generation, depAfter.Generation)
	}
	if _, err := cluster.Client().CoreV1().Secrets(ns).Get(t.Context(), remediation.BackupSecretName(rotTarget), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("backup Secret: err = %v, want not found", err)
	}
	if reasons, _ := rotationEvents(t, ns); len(reasons) != 0 {
		t.Errorf("the dry run recorded Events %v", reasons)
	}
	out := d.output()
	for _, want := range []string{"would obtain a token: http POST", "would patch Secret " + ns + "/" + rotSecret, "would restart: Deployment/town-builder reads the key through env: restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plan lacks %q", want)
		}
	}
	checkNoTokenIn(t, "authwatch output", out, initial, api.password)
}
