package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const repoRoot = "../.."

func buildOverlay(t *testing.T, dir string) string {
	t.Helper()
	data, err := buildKustomization(filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mustReplace replaces old by new exactly once, so that a test whose
// fixture drifted fails instead of checking an unchanged manifest.
func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("fixture contains %q %d times, expected once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func checkFails(t *testing.T, manifests, wantErr string) {
	t.Helper()
	_, err := checkManifests("test", []byte(manifests))
	if err == nil {
		t.Fatalf("check passed, expected an error containing %q", wantErr)
	}
	if !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("error does not contain %q:\n%v", wantErr, err)
	}
}

func TestOverlaysPass(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			m, err := checkManifests(dir, []byte(buildOverlay(t, dir)))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(dir, "overlays") && len(m.ClusterRoles)+len(m.ClusterBindings) > 0 {
				t.Errorf("%d ClusterRoles and %d ClusterRoleBindings, expected none in a namespaced overlay", len(m.ClusterRoles), len(m.ClusterBindings))
			}
		})
	}
}

func TestRBACMissingPermission(t *testing.T) {
	s := buildOverlay(t, "deploy/kustomize/overlays/minimal")
	s = mustReplace(t, s, "  - pods/log\n  verbs:\n  - get\n", "  - pods/log\n  verbs:\n  - list\n")
	checkFails(t, s, "missing get pods/log in namespace town-builder (needed for watch)")
}

func TestRBACExtraPermission(t *testing.T) {
	s := buildOverlay(t, "deploy/kustomize/overlays/rotation")
	s = mustReplace(t, s, "  resourceNames:\n  - town-builder-login\n  resources:\n  - secrets\n  verbs:\n  - get\n",
		"  resources:\n  - secrets\n  verbs:\n  - get\n")
	checkFails(t, s, "grants get secrets in namespace town-builder, which the configuration does not need")
	checkFails(t, s, "missing get secrets/town-builder-login")
}

func TestRBACWildcard(t *testing.T) {
	s := buildOverlay(t, "deploy/kustomize/overlays/minimal")
	s = mustReplace(t, s, "  - pods/log\n  verbs:\n  - get\n", "  - pods/log\n  verbs:\n  - '*'\n")
	checkFails(t, s, `wildcard "*"`)
}

func TestRBACUnboundRole(t *testing.T) {
	s := buildOverlay(t, "deploy/kustomize/overlays/minimal")
	s = mustReplace(t, s, "  kind: Role\n  name: authwatch-watch\n", "  kind: Role\n  name: authwatch-other\n")
	checkFails(t, s, "Role town-builder/authwatch-watch is bound to nothing")
}

func TestRBACFollowsConfig(t *testing.T) {
	// Watching a second namespace without a Role there is caught.
	s := buildOverlay(t, "deploy/kustomize/overlays/minimal")
	s = mustReplace(t, s, "namespaces: [town-builder]", "namespaces: [town-builder, payments]")
	checkFails(t, s, "missing list pods in namespace payments")
}

func TestWorkloadSecurity(t *testing.T) {
	base := buildOverlay(t, "deploy/kustomize/base")
	cases := []struct{ name, old, new, want string }{
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"escalation", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation must be false"},
		{"root", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot must be true"},
		{"capabilities", "- ALL", "- NET_RAW", "capabilities.drop must contain ALL"},
		{"seccomp", "type: RuntimeDefault", "type: Unconfined", "seccompProfile.type must be RuntimeDefault"},
		{"no memory limit", "memory: 256Mi", "ephemeral-storage: 256Mi", "resources.limits.memory is missing"},
		{"liveness path", "path: /healthz", "path: /", `livenessProbe.httpGet.path is "/"`},
		{"readiness path", "path: /readyz", "path: /healthz", `readinessProbe.httpGet.path is "/healthz"`},
		{"unknown field", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: true\n          readOnlyRoot: true", `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRoot"`},
		{"service port", "targetPort: http-metrics", "targetPort: metrics", `targetPort "metrics" is not a container port`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkFails(t, mustReplace(t, base, tc.old, tc.new), tc.want)
		})
	}
}

func TestSecretFromEnvRejected(t *testing.T) {
	base := buildOverlay(t, "deploy/kustomize/base")
	s := mustReplace(t, base, "        - name: POD_NAME\n", `        - name: SLACK_TOKEN
          valueFrom:
            secretKeyRef:
              key: token
              name: authwatch-slack
        - name: POD_NAME
`)
	checkFails(t, s, "env SLACK_TOKEN comes from a Secret")
}

func requireTool(t *testing.T, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		t.Fatalf("%s not found (%v): `make lint-deploy` builds helm, and Debian's prometheus package brings promtool", path, err)
	}
	return p
}

func TestChartRenderings(t *testing.T) {
	helm := requireTool(t, filepath.Join(repoRoot, "bin/helm"))
	for _, r := range helmRenderings {
		t.Run(r.name, func(t *testing.T) {
			data, err := renderChart(helm, repoRoot, r.values)
			if err != nil {
				t.Fatal(err)
			}
			m, err := checkManifests(r.name, data)
			if err != nil {
				t.Fatal(err)
			}
			if r.name == "full" {
				if len(m.ServiceMonitors) != 1 || m.ServiceMonitors[0].Metadata.Labels["release"] != "kube-prometheus-stack" {
					t.Errorf("ServiceMonitor missing or without the release label: %+v", m.ServiceMonitors)
				}
				if len(m.PrometheusRules) != 1 || m.PrometheusRules[0].Metadata.Labels["release"] != "kube-prometheus-stack" {
					t.Errorf("PrometheusRule missing or without the release label")
				}
				if len(m.ClusterRoles) != 0 {
					t.Errorf("%d ClusterRoles with watch.namespaces set, expected none", len(m.ClusterRoles))
				}
			} else if len(m.ClusterRoles) != 1 {
				t.Errorf("%d ClusterRoles with watch.namespaces empty, expected 1", len(m.ClusterRoles))
			}
			dash := 0
			for _, cm := range m.ConfigMaps {
				if cm.Labels["grafana_dashboard"] == "1" {
					dash++
					if !strings.Contains(cm.Data["authwatch.json"], `"uid": "${datasource}"`) {
						t.Errorf("dashboard ConfigMap %s does not hold the dashboard", cm.Name)
					}
				}
			}
			if dash != 1 {
				t.Errorf("%d ConfigMaps labelled grafana_dashboard=1, expected 1", dash)
			}
		})
	}
}

func TestChartOnKeyKept(t *testing.T) {
	// YAML 1.1 reads an unquoted `on:` in values as true; the chart must
	// still write the field "on" into the configuration.
	helm := requireTool(t, filepath.Join(repoRoot, "bin/helm"))
	data, err := renderChart(helm, repoRoot, []string{"deploy/helm/authwatch/ci/full-values.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifests("full", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.configMap("authwatch", "authwatch").Data["config.yaml"]
	if strings.Contains(cfg, `"true":`) || !strings.Contains(cfg, `"on":`) {
		t.Errorf("config.yaml lost the key \"on\":\n%s", cfg)
	}
}

func TestDashboardFixedUIDRejected(t *testing.T) {
	promtool := requireTool(t, "promtool")
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/authwatch.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkDashboard(filepath.Join(repoRoot, "deploy/grafana/authwatch.json"), promtool); err != nil {
		t.Fatalf("the shipped dashboard fails: %v", err)
	}
	cases := []struct{ name, old, new, want string }{
		{"fixed uid", `"uid": "${datasource}"`, `"uid": "P1809F7CD0C75ACF3"`, `datasource uid "P1809F7CD0C75ACF3" is fixed`},
		{"typo metric", "authwatch_incidents_open)", "authwatch_incident_open)", "unknown metric authwatch_incident_open"},
		{"bad promql", "sum(authwatch_incidents_open)", "sum(authwatch_incidents_open", "promtool check rules"},
		{"unfiltered", `sum by (category) (rate(authwatch_matches_total{namespace=~\"$namespace\", workload=~\"$workload\"}`, `sum by (category) (rate(authwatch_matches_total{`, "must filter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := string(data)
			if !strings.Contains(s, tc.old) {
				t.Fatalf("fixture lacks %q", tc.old)
			}
			s = strings.Replace(s, tc.old, tc.new, 1)
			path := filepath.Join(t.TempDir(), "dashboard.json")
			if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			err := checkDashboard(path, promtool)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, expected one containing %q", err, tc.want)
			}
		})
	}
}

func TestRuleTestCoverage(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		"deploy/prometheus/rules.yaml", "deploy/prometheus/rules_test.yaml", "deploy/grafana/authwatch.json",
	} {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "deploy/helm/authwatch/files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syncCopies(root); err != nil {
		t.Fatal(err)
	}
	if err := checkRules(root, nil); err != nil {
		t.Fatalf("the shipped rules fail: %v", err)
	}

	// An alert that no test expects to fire.
	path := filepath.Join(root, "deploy/prometheus/rules.yaml")
	data, _ := os.ReadFile(path)
	extra := strings.Replace(string(data), "      - alert: AuthwatchDown\n", "      - alert: AuthwatchUntested\n        expr: vector(1)\n      - alert: AuthwatchDown\n", 1)
	if err := os.WriteFile(path, []byte(extra), 0o600); err != nil {
		t.Fatal(err)
	}
	err := checkRules(root, nil)
	for _, want := range []string{
		"no test case where alert AuthwatchUntested fires",
		"no test case where alert AuthwatchUntested does not fire",
		"files/rules.yaml differs from",
		"prometheusrule.yaml: spec differs from rules.yaml",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, expected one containing %q", err, want)
		}
	}
}

func TestChartRejectsInvalidValues(t *testing.T) {
	helm := requireTool(t, filepath.Join(repoRoot, "bin/helm"))
	cases := []struct{ set, want string }{
		{"watch.namspaces={a}", "additional properties 'namspaces' not allowed"},
		{"rotation.targets[0].name=api", "missing property 'secret'"},
		{"logFormat=yaml", "/logFormat"},
		{"replicaCount=2,leaderElection.enabled=false", "replicaCount above 1 needs leaderElection.enabled"},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			out, err := exec.Command(helm, "template", "authwatch", filepath.Join(repoRoot, "deploy/helm/authwatch"), "--set", tc.set).CombinedOutput()
			if err == nil {
				t.Fatalf("helm template accepted --set %s", tc.set)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output does not contain %q:\n%s", tc.want, out)
			}
		})
	}
}
