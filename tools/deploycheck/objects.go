package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"
)

// Manifests holds the decoded objects of one rendering, by kind.
type Manifests struct {
	Source          string // name of the rendering, for messages
	Namespaces      []*corev1.Namespace
	ServiceAccounts []*corev1.ServiceAccount
	ConfigMaps      []*corev1.ConfigMap
	Services        []*corev1.Service
	Deployments     []*appsv1.Deployment
	Roles           []*rbacv1.Role
	RoleBindings    []*rbacv1.RoleBinding
	ClusterRoles    []*rbacv1.ClusterRole
	ClusterBindings []*rbacv1.ClusterRoleBinding
	ServiceMonitors []*ServiceMonitor
	PrometheusRules []*PrometheusRule
}

// ServiceMonitor is the part of the Prometheus Operator's
// monitoring.coreos.com/v1 ServiceMonitor that the chart sets. Decoding
// is strict, so a field the chart writes must be listed here, and is
// checked against the operator's field names by hand.
type ServiceMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// PrometheusRule is the monitoring.coreos.com/v1 PrometheusRule shape.
type PrometheusRule struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       RuleFile   `json:"spec"`
}

// ObjectMeta is the metadata that the custom resources above carry.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// decodeManifests splits a multi-document YAML stream and decodes each
// object strictly: an unknown or duplicate field is an error, as it is for
// `kubectl apply --validate=strict`.
func decodeManifests(source string, data []byte) (*Manifests, error) {
	m := &Manifests{Source: source}
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var errs []error
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := sigsyaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if head.Kind == "" {
			continue // an empty document, such as a template that rendered nothing
		}
		where := fmt.Sprintf("%s: %s #%d", source, head.Kind, i)
		switch head.APIVersion {
		case "monitoring.coreos.com/v1":
			var err error
			switch head.Kind {
			case "ServiceMonitor":
				var sm ServiceMonitor
				err = sigsyaml.UnmarshalStrict(doc, &sm)
				m.ServiceMonitors = append(m.ServiceMonitors, &sm)
			case "PrometheusRule":
				var pr PrometheusRule
				err = sigsyaml.UnmarshalStrict(doc, &pr)
				m.PrometheusRules = append(m.PrometheusRules, &pr)
			default:
				err = fmt.Errorf("unexpected kind")
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if err := m.add(obj); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return m, errors.Join(errs...)
}

func (m *Manifests) add(obj runtime.Object) error {
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.Namespaces = append(m.Namespaces, o)
	case *corev1.ServiceAccount:
		m.ServiceAccounts = append(m.ServiceAccounts, o)
	case *corev1.ConfigMap:
		m.ConfigMaps = append(m.ConfigMaps, o)
	case *corev1.Service:
		m.Services = append(m.Services, o)
	case *appsv1.Deployment:
		m.Deployments = append(m.Deployments, o)
	case *rbacv1.Role:
		m.Roles = append(m.Roles, o)
	case *rbacv1.RoleBinding:
		m.RoleBindings = append(m.RoleBindings, o)
	case *rbacv1.ClusterRole:
		m.ClusterRoles = append(m.ClusterRoles, o)
	case *rbacv1.ClusterRoleBinding:
		m.ClusterBindings = append(m.ClusterBindings, o)
	default:
		return fmt.Errorf("kind %T is not expected in authwatch's manifests", obj)
	}
	return nil
}

func (m *Manifests) configMap(namespace, name string) *corev1.ConfigMap {
	for _, c := range m.ConfigMaps {
		if c.Namespace == namespace && c.Name == name {
			return c
		}
	}
	return nil
}
