package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizations are the directories that `kubectl apply -k` accepts.
var kustomizations = []string{
	"deploy/kustomize/base",
	"deploy/kustomize/overlays/minimal",
	"deploy/kustomize/overlays/rotation",
}

// helmRenderings are the value sets the chart is rendered with: the
// defaults, and every optional part turned on.
var helmRenderings = []struct {
	name   string
	values []string
}{
	{"defaults", nil},
	{"full", []string{"deploy/helm/authwatch/ci/full-values.yaml"}},
}

// buildKustomization runs the kustomize that kubectl embeds.
func buildKustomization(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return res.AsYaml()
}

// renderChart runs `helm template` on the chart with the given values.
func renderChart(helm, root string, values []string) ([]byte, error) {
	args := []string{"template", "authwatch", filepath.Join(root, "deploy/helm/authwatch"), "--namespace", "authwatch"}
	for _, v := range values {
		args = append(args, "--values", filepath.Join(root, v))
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %v: %w\n%s", args, err, stderr.Bytes())
	}
	return out, nil
}

// checkManifests runs every check that applies to one rendering.
func checkManifests(source string, data []byte) (*Manifests, error) {
	m, err := decodeManifests(source, data)
	if err != nil {
		return m, err
	}
	return m, errors.Join(checkWorkloads(m), checkRBAC(m))
}

func checkAll(root, helm, promtool string) error {
	var errs []error
	var rendered []*PrometheusRule
	for _, dir := range kustomizations {
		data, err := buildKustomization(filepath.Join(root, dir))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err = checkManifests(dir, data)
		errs = append(errs, err)
	}
	for _, r := range helmRenderings {
		data, err := renderChart(helm, root, r.values)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m, err := checkManifests("helm template ("+r.name+" values)", data)
		errs = append(errs, err)
		if m != nil {
			rendered = append(rendered, m.PrometheusRules...)
		}
	}
	errs = append(errs,
		checkRules(root, rendered),
		checkDashboard(filepath.Join(root, "deploy/grafana/authwatch.json"), promtool),
	)
	return errors.Join(errs...)
}
