package main

import (
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkWorkloads checks that the Deployment runs as the restricted Pod
// Security Standard requires, bounds its resources, probes /healthz and
// /readyz, takes secrets as mounted files, and refers only to objects
// that the same manifests create. It also checks that each Service and
// ServiceMonitor selects it.
func checkWorkloads(m *Manifests) error {
	var errs []error
	if len(m.Deployments) != 1 {
		return fmt.Errorf("%s: %d Deployments, expected exactly one", m.Source, len(m.Deployments))
	}
	for _, d := range m.Deployments {
		errs = append(errs, checkDeployment(m, d)...)
	}
	errs = append(errs, checkServices(m)...)
	return errors.Join(errs...)
}

func checkDeployment(m *Manifests, d *appsv1.Deployment) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: Deployment %s/%s: %s", m.Source, d.Namespace, d.Name, fmt.Sprintf(format, args...)))
	}
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		bad("spec.template.spec.securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("spec.template.spec.securityContext.seccompProfile.type must be RuntimeDefault")
	}
	if pod.ServiceAccountName == "" {
		bad("spec.template.spec.serviceAccountName is empty; authwatch needs its own ServiceAccount")
	} else if !slices.ContainsFunc(m.ServiceAccounts, func(sa *corev1.ServiceAccount) bool {
		return sa.Name == pod.ServiceAccountName && sa.Namespace == d.Namespace
	}) {
		bad("ServiceAccount %q is not in the manifests", pod.ServiceAccountName)
	}
	if sel, err := metaSelector(d); err != nil {
		bad("spec.selector: %v", err)
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		bad("spec.selector does not select the pod template's labels")
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) &&
			m.configMap(d.Namespace, v.ConfigMap.Name) == nil {
			bad("volume %q: ConfigMap %q is not in the manifests", v.Name, v.ConfigMap.Name)
		}
	}
	for _, c := range pod.Containers {
		at := "container " + c.Name
		sc := c.SecurityContext
		switch {
		case sc == nil:
			bad("%s: securityContext is missing", at)
		default:
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				bad("%s: securityContext.allowPrivilegeEscalation must be false", at)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				bad("%s: securityContext.readOnlyRootFilesystem must be true", at)
			}
			if sc.Privileged != nil && *sc.Privileged {
				bad("%s: securityContext.privileged must not be true", at)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				bad("%s: securityContext.capabilities.drop must contain ALL", at)
			} else if len(sc.Capabilities.Add) > 0 {
				bad("%s: securityContext.capabilities.add must be empty, not %v", at, sc.Capabilities.Add)
			}
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				bad("%s: resources.requests.%s is missing", at, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				bad("%s: resources.limits.%s is missing", at, r)
			}
		}
		checkProbe := func(name string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil {
				bad("%s: %s must be an httpGet probe of %s", at, name, path)
				return
			}
			if p.HTTPGet.Path != path {
				bad("%s: %s.httpGet.path is %q, expected %q", at, name, p.HTTPGet.Path, path)
			}
			if !containerHasPort(c, p.HTTPGet.Port.String()) {
				bad("%s: %s.httpGet.port %q is not a port of the container", at, name, p.HTTPGet.Port.String())
			}
		}
		checkProbe("livenessProbe", c.LivenessProbe, "/healthz")
		checkProbe("readinessProbe", c.ReadinessProbe, "/readyz")
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				bad("%s: env %s comes from a Secret; mount secrets as files instead, so they are never in the process environment", at, e.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				bad("%s: envFrom a Secret; mount secrets as files instead", at)
			}
		}
		for _, vm := range c.VolumeMounts {
			v, ok := volumes[vm.Name]
			if !ok {
				bad("%s: volumeMount %q has no volume", at, vm.Name)
				continue
			}
			if (v.Secret != nil || v.ConfigMap != nil) && !vm.ReadOnly {
				bad("%s: volumeMount %q of a Secret or ConfigMap must be readOnly", at, vm.Name)
			}
			if vm.SubPath != "" && v.Secret != nil {
				bad("%s: volumeMount %q uses subPath, so a rotated Secret never reaches the file", at, vm.Name)
			}
		}
	}
	return errs
}

func metaSelector(d *appsv1.Deployment) (labels.Selector, error) {
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		return nil, errors.New("matchLabels is empty")
	}
	return labels.SelectorFromSet(d.Spec.Selector.MatchLabels), nil
}

func containerHasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return true
		}
	}
	return false
}

// checkServices checks that each Service selects the Deployment's pods on
// a named container port, and that each ServiceMonitor selects a Service
// by its labels and scrapes one of its ports by name.
func checkServices(m *Manifests) []error {
	var errs []error
	d := m.Deployments[0]
	if len(m.Services) == 0 {
		errs = append(errs, fmt.Errorf("%s: no Service exposes the metrics port", m.Source))
	}
	for _, s := range m.Services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			errs = append(errs, fmt.Errorf("%s: Service %s does not select the pods of Deployment %s", m.Source, s.Name, d.Name))
		}
		for _, p := range s.Spec.Ports {
			if !containerHasPort(d.Spec.Template.Spec.Containers[0], p.TargetPort.String()) {
				errs = append(errs, fmt.Errorf("%s: Service %s port %s: targetPort %q is not a container port", m.Source, s.Name, p.Name, p.TargetPort.String()))
			}
		}
	}
	for _, sm := range m.ServiceMonitors {
		matched := false
		for _, s := range m.Services {
			if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
				continue
			}
			matched = true
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					errs = append(errs, fmt.Errorf("%s: ServiceMonitor %s: endpoint port %q is not a port name of Service %s", m.Source, sm.Metadata.Name, ep.Port, s.Name))
				}
			}
			if sm.Spec.JobLabel != "" && s.Labels[sm.Spec.JobLabel] != "authwatch" {
				errs = append(errs, fmt.Errorf("%s: ServiceMonitor %s: jobLabel %q gives job=%q, but the alerting rules and the dashboard select job=\"authwatch\"",
					m.Source, sm.Metadata.Name, sm.Spec.JobLabel, s.Labels[sm.Spec.JobLabel]))
			}
		}
		if !matched {
			errs = append(errs, fmt.Errorf("%s: ServiceMonitor %s selects no Service by its labels", m.Source, sm.Metadata.Name))
		}
		if len(sm.Spec.Endpoints) == 0 {
			errs = append(errs, fmt.Errorf("%s: ServiceMonitor %s has no endpoints", m.Source, sm.Metadata.Name))
		}
	}
	return errs
}
