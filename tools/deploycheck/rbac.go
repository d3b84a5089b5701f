package main

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// permission is one verb on one resource, in one namespace ("" for
// cluster-wide), on one object name ("" for any object).
type permission struct {
	Namespace, Group, Resource, Verb, Name string
}

func (p permission) String() string {
	s := p.Verb + " " + p.Resource
	if p.Group != "" {
		s += "." + p.Group
	}
	if p.Name != "" {
		s += "/" + p.Name
	}
	if p.Namespace == "" {
		return s + " cluster-wide"
	}
	return s + " in namespace " + p.Namespace
}

// deployConfig is the part of authwatch's configuration file that decides
// which permissions it needs.
type deployConfig struct {
	Watch struct {
		Namespaces    []string `json:"namespaces"`
		AllNamespaces bool     `json:"all_namespaces"`
	} `json:"watch"`
	Remediation struct {
		Targets []struct {
			Name   string `json:"name"`
			Secret struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
			} `json:"secret"`
			Restart []struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"restart"`
			Source struct {
				HTTP *struct {
					CredentialsSecret string `json:"credentials_secret"`
				} `json:"http"`
				Exec *struct {
					Namespace string `json:"namespace"`
				} `json:"exec"`
			} `json:"source"`
		} `json:"targets"`
	} `json:"remediation"`
}

// expectedPermissions derives what authwatch needs from its configuration:
// the checkpoint ConfigMap and the Lease (when leaseName is set) in its
// own namespace; pods
// and their logs in the watched namespaces; and, per rotation target, its
// Secrets and workloads by name.
func expectedPermissions(ownNamespace, checkpointName, leaseName string, cfg *deployConfig) map[permission]string {
	want := map[permission]string{}
	add := func(why, ns, group, resource, name string, verbs ...string) {
		for _, v := range verbs {
			want[permission{ns, group, resource, v, name}] = why
		}
	}
	add("checkpoint", ownNamespace, "", "configmaps", "", "create")
	add("checkpoint", ownNamespace, "", "configmaps", checkpointName, "get", "update")
	if leaseName != "" {
		add("leader election", ownNamespace, "coordination.k8s.io", "leases", "", "create")
		add("leader election", ownNamespace, "coordination.k8s.io", "leases", leaseName, "get", "update")
	}

	watched := cfg.Watch.Namespaces
	switch {
	case cfg.Watch.AllNamespaces:
		watched = []string{""}
	case len(watched) == 0:
		watched = []string{ownNamespace}
	}
	for _, ns := range watched {
		add("watch", ns, "", "pods", "", "list", "watch")
		add("watch", ns, "", "pods/log", "", "get")
	}
	for _, t := range cfg.Remediation.Targets {
		why := "rotation target " + t.Name
		ns := t.Secret.Namespace
		add(why, ns, "", "secrets", t.Secret.Name, "get", "patch")
		// The backup Secret keeps the previous token (or its hash).
		add(why, ns, "", "secrets", "authwatch-rotation-"+t.Name, "get", "update")
		add(why, ns, "", "secrets", "", "create")
		add(why, ns, "", "events", "", "create")
		// Verification reads the pods that log failures after the restart.
		add(why, ns, "", "pods", "", "get")
		for _, w := range t.Restart {
			add(why, ns, "apps", strings.ToLower(w.Kind)+"s", w.Name, "get", "patch")
			if w.Kind == "Deployment" {
				add(why, ns, "apps", "replicasets", "", "list")
			}
		}
		if h := t.Source.HTTP; h != nil && h.CredentialsSecret != "" {
			add(why, ns, "", "secrets", h.CredentialsSecret, "get")
		}
		if e := t.Source.Exec; e != nil {
			execNS := e.Namespace
			if execNS == "" {
				execNS = ns
			}
			add(why, execNS, "", "pods", "", "list")
			add(why, execNS, "", "pods/exec", "", "create")
		}
	}
	return want
}

// grantedPermissions expands the rules of every Role and ClusterRole bound
// to the ServiceAccount. A ClusterRole bound by a RoleBinding grants only
// in the binding's namespace.
func grantedPermissions(m *Manifests, saNamespace, saName string) (map[permission]string, []error) {
	got := map[permission]string{}
	var errs []error
	boundToSA := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == saName && s.Namespace == saNamespace {
				return true
			}
		}
		return false
	}
	expand := func(origin, ns string, rules []rbacv1.PolicyRule) {
		for i, r := range rules {
			at := fmt.Sprintf("%s rules[%d]", origin, i)
			if len(r.NonResourceURLs) > 0 {
				errs = append(errs, fmt.Errorf("%s: nonResourceURLs %v are not needed", at, r.NonResourceURLs))
			}
			for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames} {
				if slices.Contains(list, "*") {
					errs = append(errs, fmt.Errorf("%s: wildcard \"*\" grants more than authwatch needs; list the items", at))
				}
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						for _, n := range names {
							got[permission{ns, g, res, v, n}] = origin
						}
					}
				}
			}
		}
	}
	usedRoles := map[string]bool{}
	for _, b := range m.RoleBindings {
		if !boundToSA(b.Subjects) {
			errs = append(errs, fmt.Errorf("%s: RoleBinding %s/%s binds no subject authwatch runs as (%s/%s)", m.Source, b.Namespace, b.Name, saNamespace, saName))
			continue
		}
		origin := fmt.Sprintf("%s: %s %s/%s (via RoleBinding %s)", m.Source, b.RoleRef.Kind, b.Namespace, b.RoleRef.Name, b.Name)
		switch b.RoleRef.Kind {
		case "Role":
			i := slices.IndexFunc(m.Roles, func(r *rbacv1.Role) bool { return r.Namespace == b.Namespace && r.Name == b.RoleRef.Name })
			if i < 0 {
				errs = append(errs, fmt.Errorf("%s: RoleBinding %s/%s refers to Role %q, which is not in the manifests", m.Source, b.Namespace, b.Name, b.RoleRef.Name))
				continue
			}
			usedRoles["Role/"+b.Namespace+"/"+b.RoleRef.Name] = true
			expand(origin, b.Namespace, m.Roles[i].Rules)
		case "ClusterRole":
			i := slices.IndexFunc(m.ClusterRoles, func(r *rbacv1.ClusterRole) bool { return r.Name == b.RoleRef.Name })
			if i < 0 {
				errs = append(errs, fmt.Errorf("%s: RoleBinding %s/%s refers to ClusterRole %q, which is not in the manifests", m.Source, b.Namespace, b.Name, b.RoleRef.Name))
				continue
			}
			usedRoles["ClusterRole/"+b.RoleRef.Name] = true
			expand(origin, b.Namespace, m.ClusterRoles[i].Rules)
		}
	}
	for _, b := range m.ClusterBindings {
		if !boundToSA(b.Subjects) {
			errs = append(errs, fmt.Errorf("%s: ClusterRoleBinding %s binds no subject authwatch runs as (%s/%s)", m.Source, b.Name, saNamespace, saName))
			continue
		}
		i := slices.IndexFunc(m.ClusterRoles, func(r *rbacv1.ClusterRole) bool { return r.Name == b.RoleRef.Name })
		if b.RoleRef.Kind != "ClusterRole" || i < 0 {
			errs = append(errs, fmt.Errorf("%s: ClusterRoleBinding %s refers to %s %q, which is not in the manifests", m.Source, b.Name, b.RoleRef.Kind, b.RoleRef.Name))
			continue
		}
		usedRoles["ClusterRole/"+b.RoleRef.Name] = true
		expand(fmt.Sprintf("%s: ClusterRole %s (via ClusterRoleBinding %s)", m.Source, b.RoleRef.Name, b.Name), "", m.ClusterRoles[i].Rules)
	}
	for _, r := range m.Roles {
		if !usedRoles["Role/"+r.Namespace+"/"+r.Name] {
			errs = append(errs, fmt.Errorf("%s: Role %s/%s is bound to nothing", m.Source, r.Namespace, r.Name))
		}
	}
	for _, r := range m.ClusterRoles {
		if !usedRoles["ClusterRole/"+r.Name] {
			errs = append(errs, fmt.Errorf("%s: ClusterRole %s is bound to nothing", m.Source, r.Name))
		}
	}
	return got, errs
}

// checkRBAC checks that the RBAC rules grant exactly what the
// configuration in the Deployment's ConfigMap needs: every needed
// permission is granted, and every granted one is needed.
func checkRBAC(m *Manifests) error {
	if len(m.Deployments) != 1 {
		return fmt.Errorf("%s: RBAC check needs exactly one Deployment, found %d", m.Source, len(m.Deployments))
	}
	d := m.Deployments[0]
	cfg, err := deploymentConfig(m)
	if err != nil {
		return err
	}
	want := expectedPermissions(d.Namespace, checkpointName(d), argValue(d, "--leader-election-lease", ""), cfg)
	got, errs := grantedPermissions(m, d.Namespace, d.Spec.Template.Spec.ServiceAccountName)

	var missing, extra []string
	for p, why := range want {
		if _, ok := got[p]; ok {
			continue
		}
		cluster := p
		cluster.Namespace = ""
		if _, ok := got[cluster]; ok {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s: missing %s (needed for %s)", m.Source, p, why))
	}
	for p, origin := range got {
		if _, ok := want[p]; !ok {
			extra = append(extra, fmt.Sprintf("%s grants %s, which the configuration does not need", origin, p))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, s := range append(missing, extra...) {
		errs = append(errs, errors.New(s))
	}
	return errors.Join(errs...)
}

// deploymentConfig decodes config.yaml from the ConfigMap that the
// Deployment mounts as its configuration.
func deploymentConfig(m *Manifests) (*deployConfig, error) {
	d := m.Deployments[0]
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != "config" || v.ConfigMap == nil {
			continue
		}
		cm := m.configMap(d.Namespace, v.ConfigMap.Name)
		if cm == nil {
			return nil, fmt.Errorf("%s: ConfigMap %s/%s of volume config is not in the manifests", m.Source, d.Namespace, v.ConfigMap.Name)
		}
		text, ok := cm.Data["config.yaml"]
		if !ok {
			return nil, fmt.Errorf("%s: ConfigMap %s/%s has no key config.yaml", m.Source, d.Namespace, cm.Name)
		}
		var cfg deployConfig
		if err := sigsyaml.Unmarshal([]byte(text), &cfg); err != nil {
			return nil, fmt.Errorf("%s: ConfigMap %s/%s config.yaml: %w", m.Source, d.Namespace, cm.Name, err)
		}
		return &cfg, nil
	}
	return nil, fmt.Errorf("%s: Deployment %s has no ConfigMap volume named config", m.Source, d.Name)
}

// checkpointName returns the checkpoint ConfigMap that the Deployment's
// authwatch uses: its --checkpoint-configmap flag, or the flag's default.
func checkpointName(d *appsv1.Deployment) string {
	return argValue(d, "--checkpoint-configmap", "authwatch-checkpoint")
}

// argValue returns the value of the last --flag=value argument of the
// Deployment's container, or def without one.
func argValue(d *appsv1.Deployment, flag, def string) string {
	value := def
	for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(arg, flag+"="); ok {
			value = v
		}
	}
	return value
}
