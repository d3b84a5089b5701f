//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// deployKustomizations are the folders users apply with `kubectl apply -k`.
var deployKustomizations = []string{
	"deploy/kustomize/base",
	"deploy/kustomize/overlays/minimal",
	"deploy/kustomize/overlays/rotation",
}

// deployChartRenderings are the value sets the chart is tried with. The
// Prometheus Operator's kinds are off: the test cluster has no such CRDs.
var deployChartRenderings = []struct {
	name   string
	values []string
}{
	{"defaults", nil},
	{"full", []string{"deploy/helm/authwatch/ci/full-values.yaml"}},
}

var noOperatorKinds = []string{"serviceMonitor.enabled=false", "prometheusRule.enabled=false"}

// deployNamespaces are the namespaces that the manifests refer to and do
// not create themselves.
var deployNamespaces = []string{"authwatch", "town-builder", "payments", "iribala"}

// TestDeployManifestsDryRun applies every kustomization and chart
// rendering with --dry-run=server, so the API server runs its validation
// and admission (RBAC escalation checks and Pod Security included) on each
// object without storing it. Any warning fails the test.
func TestDeployManifestsDryRun(t *testing.T) {
	ctx := t.Context()
	for _, ns := range deployNamespaces {
		newNamespace(t, ns)
	}
	// The Deployment's pod must pass the restricted Pod Security Standard;
	// a violation is a warning, which --warnings-as-errors turns into an
	// error.
	if _, err := cluster.Kubectl(ctx, "label", "--overwrite", "namespace", "authwatch",
		"pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest"); err != nil {
		t.Fatal(err)
	}
	for _, dir := range deployKustomizations {
		t.Run(dir, func(t *testing.T) {
			built, err := cluster.Kubectl(ctx, "kustomize", filepath.Join(repoRoot, dir))
			if err != nil {
				t.Fatal(err)
			}
			out, err := cluster.Kubectl(ctx, "--warnings-as-errors", "apply", "--dry-run=server", "-k", filepath.Join(repoRoot, dir))
			if err != nil {
				t.Fatal(err)
			}
			checkDryRunOutput(t, splitManifests(t, built), string(out))
		})
	}
	for _, r := range deployChartRenderings {
		t.Run("helm "+r.name, func(t *testing.T) {
			rendered := renderChart(t, "authwatch", "authwatch", r.values, noOperatorKinds...)
			file := filepath.Join(t.TempDir(), "rendered.yaml")
			if err := os.WriteFile(file, rendered, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := cluster.Kubectl(ctx, "--warnings-as-errors", "apply", "--dry-run=server", "-f", file)
			if err != nil {
				t.Fatal(err)
			}
			checkDryRunOutput(t, splitManifests(t, rendered), string(out))
		})
	}
}

// checkDryRunOutput checks that kubectl reported each object as a server
// dry run.
func checkDryRunOutput(t *testing.T, docs []manifestDoc, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(docs) {
		t.Errorf("kubectl reported %d objects, the manifests hold %d:\n%s", len(lines), len(docs), out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "(server dry run)") {
			t.Errorf("kubectl line %q is not a server dry run", l)
		}
	}
}

// TestDeployConfigsValidate checks the configuration file of every
// kustomization and chart rendering with `authwatch config validate`, the
// check that `authwatch run` makes at start.
func TestDeployConfigsValidate(t *testing.T) {
	ctx := t.Context()
	check := func(t *testing.T, manifests []byte) {
		docs := splitManifests(t, manifests)
		var d appsv1.Deployment
		findDoc(t, docs, "Deployment", &d)
		cm := configMapOf(t, docs, &d)
		text := cm.Data["config.yaml"]
		// The rule files that the configuration names are mounted from
		// ConfigMaps: write them here and point the configuration at them.
		dir := t.TempDir()
		for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name != m.Name || v.ConfigMap == nil || v.Name == "config" {
					continue
				}
				for _, doc := range docs {
					var mounted corev1.ConfigMap
					if doc.Kind != "ConfigMap" || doc.Name != v.ConfigMap.Name || sigsyaml.Unmarshal(doc.Raw, &mounted) != nil {
						continue
					}
					for key, data := range mounted.Data {
						local := filepath.Join(dir, v.Name+"-"+key)
						if err := os.WriteFile(local, []byte(data), 0o600); err != nil {
							t.Fatal(err)
						}
						text = strings.ReplaceAll(text, filepath.Join(m.MountPath, key), local)
					}
				}
			}
		}
		// Files mounted from Secrets are not in the manifests, and config
		// validate checks that every named file exists: stand in an empty
		// file for each path under a Secret mount.
		for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				mounted := regexp.MustCompile(regexp.QuoteMeta(m.MountPath) + `/[^\s"',\]}]+`)
				for _, p := range mounted.FindAllString(text, -1) {
					local := filepath.Join(dir, v.Name+"-"+filepath.Base(p))
					if err := os.WriteFile(local, nil, 0o600); err != nil {
						t.Fatal(err)
					}
					text = strings.ReplaceAll(text, p, local)
				}
			}
		}
		file := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := execOutput(repoBinary(t, "authwatch"), "config", "validate", file)
		if err != nil {
			t.Fatalf("authwatch config validate: %v\n%s\nconfig.yaml:\n%s", err, out, text)
		}

		// Compile the rules ConfigMap, if any, with the ids the
		// configuration disables, as rules list would.
		var cfg struct {
			Rules struct {
				Disable []string `json:"disable"`
			} `json:"rules"`
		}
		if err := sigsyaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
			t.Fatal(err)
		}
		args := []string{"rules", "list", "--disable=" + strings.Join(cfg.Rules.Disable, ",")}
		for _, d := range docs {
			var rules corev1.ConfigMap
			if d.Kind != "ConfigMap" || sigsyaml.Unmarshal(d.Raw, &rules) != nil || rules.Data["rules.yaml"] == "" {
				continue
			}
			path := filepath.Join(t.TempDir(), "rules.yaml")
			if err := os.WriteFile(path, []byte(rules.Data["rules.yaml"]), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--rules="+path)
		}
		if out, err := execOutput(repoBinary(t, "authwatch"), args...); err != nil {
			t.Fatalf("authwatch %v: %v\n%s", args, err, out)
		}
	}
	for _, dir := range deployKustomizations {
		t.Run(dir, func(t *testing.T) {
			built, err := cluster.Kubectl(ctx, "kustomize", filepath.Join(repoRoot, dir))
			if err != nil {
				t.Fatal(err)
			}
			check(t, built)
		})
	}
	for _, r := range deployChartRenderings {
		t.Run("helm "+r.name, func(t *testing.T) {
			check(t, renderChart(t, "authwatch", "authwatch", r.values))
		})
	}
}

// configMapOf returns the ConfigMap that deployment mounts as its
// configuration (the volume named config).
func configMapOf(t *testing.T, docs []manifestDoc, deployment *appsv1.Deployment) *corev1.ConfigMap {
	t.Helper()
	name := ""
	for _, v := range deployment.Spec.Template.Spec.Volumes {
		if v.Name == "config" && v.ConfigMap != nil {
			name = v.ConfigMap.Name
		}
	}
	for _, d := range docs {
		if d.Kind == "ConfigMap" && d.Name == name {
			var cm corev1.ConfigMap
			findDoc(t, []manifestDoc{d}, "ConfigMap", &cm)
			return &cm
		}
	}
	t.Fatalf("Deployment %s mounts ConfigMap %q, which is not in the manifests", deployment.Name, name)
	return nil
}
