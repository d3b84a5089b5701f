package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/authwatch/authwatch/internal/permission"
)

// AnnotationRestartedAt is the pod-template annotation that `kubectl
// rollout restart` sets; changing it makes the controller roll new pods.
const AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"

// Consumption is the way a workload reads the token key.
type Consumption string

// Ways of consuming a Secret key.
const (
	// ConsumedEnv is an env var with secretKeyRef or an envFrom secretRef:
	// the value is fixed when the container starts.
	ConsumedEnv Consumption = "env"
	// ConsumedSubPath is a subPath mount of the Secret volume, which the
	// kubelet never updates.
	ConsumedSubPath Consumption = "subPath"
	// ConsumedVolume is a plain Secret volume mount, which the kubelet
	// updates in place on its next sync.
	ConsumedVolume Consumption = "volume"
	// ConsumedNone means no container of the pod template reads the key.
	ConsumedNone Consumption = "none"
)

// needsRestart reports whether a new value reaches the containers only
// through a restart.
func (c Consumption) needsRestart() bool { return c == ConsumedEnv || c == ConsumedSubPath }

// workload is a Deployment, StatefulSet or DaemonSet read from the API.
type workload struct {
	ref      WorkloadRef
	object   metav1.Object
	template *corev1.PodTemplateSpec
	paused   bool
}

func (r *Rotator) getWorkload(ctx context.Context, namespace string, ref WorkloadRef) (*workload, error) {
	apps := r.client.AppsV1()
	var (
		obj  metav1.Object
		tmpl *corev1.PodTemplateSpec
		err  error
		w    = &workload{ref: ref}
	)
	switch ref.Kind {
	case "Deployment":
		var d *appsv1.Deployment
		d, err = apps.Deployments(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			obj, tmpl, w.paused = d, &d.Spec.Template, d.Spec.Paused
		}
	case "StatefulSet":
		var s *appsv1.StatefulSet
		s, err = apps.StatefulSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			obj, tmpl = s, &s.Spec.Template
		}
	case "DaemonSet":
		var d *appsv1.DaemonSet
		d, err = apps.DaemonSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			obj, tmpl = d, &d.Spec.Template
		}
	default:
		return nil, fmt.Errorf("remediation: unsupported workload kind %q", ref.Kind)
	}
	if err != nil {
		err = r.perm.check(err, permission.Get, WorkloadResource(ref.Kind), namespace)
		return nil, fmt.Errorf("remediation: read %s in %s: %w", ref, namespace, err)
	}
	w.object, w.template = obj, tmpl
	return w, nil
}

// consumption returns the strongest way any container of the pod
// template reads key from the Secret named name: env and subPath (which
// need a restart) win over a plain volume mount.
func consumption(spec *corev1.PodSpec, name, key string) Consumption {
	found := ConsumedNone
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil && v.Secret.SecretName == name:
			volumes[v.Name] = secretItemsInclude(v.Secret.Items, key)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil && src.Secret.Name == name && secretItemsInclude(src.Secret.Items, key) {
					volumes[v.Name] = true
				}
			}
		}
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		for _, e := range c.Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Name == name && ref.SecretKeyRef.Key == key {
				return ConsumedEnv
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil && e.SecretRef.Name == name {
				return ConsumedEnv
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				continue
			}
			if m.SubPath != "" || m.SubPathExpr != "" {
				found = ConsumedSubPath
			} else if found == ConsumedNone {
				found = ConsumedVolume
			}
		}
	}
	return found
}

func secretItemsInclude(items []corev1.KeyToPath, key string) bool {
	if len(items) == 0 {
		return true
	}
	for _, it := range items {
		if it.Key == key {
			return true
		}
	}
	return false
}

// restart sets the restartedAt pod-template annotation, as `kubectl
// rollout restart` does, and returns the value it set.
func (r *Rotator) restart(ctx context.Context, namespace string, ref WorkloadRef, at time.Time) (string, error) {
	if err := r.mayWrite(ctx); err != nil {
		return "", err
	}
	value := at.UTC().Format(time.RFC3339Nano)
	body, err := json.Marshal(map[string]any{
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{AnnotationRestartedAt: value},
		}}},
	})
	if err != nil {
		return "", err
	}
	apps := r.client.AppsV1()
	opts := metav1.PatchOptions{}
	switch ref.Kind {
	case "Deployment":
		_, err = apps.Deployments(namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, body, opts)
	case "StatefulSet":
		_, err = apps.StatefulSets(namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, body, opts)
	case "DaemonSet":
		_, err = apps.DaemonSets(namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, body, opts)
	}
	if err != nil {
		err = r.perm.check(err, permission.Patch, WorkloadResource(ref.Kind), namespace)
		return "", fmt.Errorf("remediation: restart %s in %s: %w", ref, namespace, err)
	}
	return value, nil
}

// rolloutStatus is one look at a rollout: whether it is complete, the
// prefix of the new pods' names where the kind has one, and what is
// missing otherwise.
type rolloutStatus struct {
	done      bool
	podPrefix string
	waiting   string
}

// waitRollout polls the workload until its rollout of the pod template
// carrying restartedAt is complete, or the timeout passes.
func (r *Rotator) waitRollout(ctx context.Context, namespace string, ref WorkloadRef, restartedAt string, timeout time.Duration) (rolloutStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(r.pollInterval)
	defer tick.Stop()
	last := rolloutStatus{waiting: "no status read yet"}
	for {
		st, err := r.rolloutStatus(ctx, namespace, ref, restartedAt)
		switch {
		case err != nil && ctx.Err() == nil:
			return st, err
		case err == nil:
			last = st
			if st.done {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			if parentDone(ctx) {
				return last, ctx.Err()
			}
			return last, fmt.Errorf("remediation: rollout of %s in %s timed out after %s: %s", ref, namespace, timeout, last.waiting)
		case <-tick.C:
		}
	}
}

// parentDone reports whether ctx ended for a reason other than its own
// deadline.
func parentDone(ctx context.Context) bool {
	return ctx.Err() != nil && context.Cause(ctx) != context.DeadlineExceeded
}

func (r *Rotator) rolloutStatus(ctx context.Context, namespace string, ref WorkloadRef, restartedAt string) (rolloutStatus, error) {
	apps := r.client.AppsV1()
	switch ref.Kind {
	case "Deployment":
		d, err := apps.Deployments(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			err = r.perm.check(err, permission.Get, WorkloadResource(ref.Kind), namespace)
			return rolloutStatus{}, fmt.Errorf("remediation: read %s in %s: %w", ref, namespace, err)
		}
		return r.deploymentStatus(ctx, d, restartedAt)
	case "StatefulSet":
		s, err := apps.StatefulSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			err = r.perm.check(err, permission.Get, WorkloadResource(ref.Kind), namespace)
			return rolloutStatus{}, fmt.Errorf("remediation: read %s in %s: %w", ref, namespace, err)
		}
		return statefulSetStatus(s), nil
	case "DaemonSet":
		d, err := apps.DaemonSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			err = r.perm.check(err, permission.Get, WorkloadResource(ref.Kind), namespace)
			return rolloutStatus{}, fmt.Errorf("remediation: read %s in %s: %w", ref, namespace, err)
		}
		return daemonSetStatus(d), nil
	}
	return rolloutStatus{}, fmt.Errorf("remediation: unsupported workload kind %q", ref.Kind)
}

// deploymentStatus applies the checks of `kubectl rollout status`, and
// also requires the ReplicaSet whose pod template carries restartedAt:
// without it the restart did not happen.
func (r *Rotator) deploymentStatus(ctx context.Context, d *appsv1.Deployment, restartedAt string) (rolloutStatus, error) {
	if d.Spec.Paused {
		return rolloutStatus{}, &RejectedError{Target: d.Name, Reason: ReasonPaused, Detail: fmt.Sprintf("Deployment %s/%s was paused during the rollout", d.Namespace, d.Name)}
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return rolloutStatus{}, fmt.Errorf("remediation: Deployment %s/%s exceeded its progress deadline", d.Namespace, d.Name)
		}
	}
	rsList, err := r.client.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector),
	})
	if err != nil {
		err = r.perm.check(err, permission.List, permission.ReplicaSets, d.Namespace)
		return rolloutStatus{}, fmt.Errorf("remediation: list ReplicaSets of Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	newRS := ""
	for i := range rsList.Items {
		rs := &rsList.Items[i]
		if metav1.IsControlledBy(rs, d) && rs.Spec.Template.Annotations[AnnotationRestartedAt] == restartedAt {
			newRS = rs.Name
		}
	}
	st := rolloutStatus{}
	if newRS != "" {
		st.podPrefix = newRS + "-"
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case d.Generation > s.ObservedGeneration:
		st.waiting = "the controller has not observed the restart yet"
	case newRS == "":
		st.waiting = "no ReplicaSet with the new pod template yet"
	case s.UpdatedReplicas < want:
		st.waiting = fmt.Sprintf("%d of %d new replicas updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		st.waiting = fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		st.waiting = fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	default:
		st.done = true
	}
	return st, nil
}

func statefulSetStatus(s *appsv1.StatefulSet) rolloutStatus {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	switch {
	case s.Generation > st.ObservedGeneration:
		return rolloutStatus{waiting: "the controller has not observed the restart yet"}
	case st.UpdatedReplicas < want:
		return rolloutStatus{waiting: fmt.Sprintf("%d of %d new replicas updated", st.UpdatedReplicas, want)}
	case st.ReadyReplicas < want:
		return rolloutStatus{waiting: fmt.Sprintf("%d of %d replicas ready", st.ReadyReplicas, want)}
	case st.UpdateRevision != "" && st.CurrentRevision != st.UpdateRevision:
		return rolloutStatus{waiting: "current revision is not the update revision yet"}
	}
	return rolloutStatus{done: true}
}

func daemonSetStatus(d *appsv1.DaemonSet) rolloutStatus {
	st := d.Status
	switch {
	case d.Generation > st.ObservedGeneration:
		return rolloutStatus{waiting: "the controller has not observed the restart yet"}
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return rolloutStatus{waiting: fmt.Sprintf("%d of %d nodes updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)}
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return rolloutStatus{waiting: fmt.Sprintf("%d of %d pods available", st.NumberAvailable, st.DesiredNumberScheduled)}
	}
	return rolloutStatus{done: true}
}

// describeConsumption returns a line for the plan.
func describeConsumption(ref WorkloadRef, c Consumption, forced bool) string {
	switch {
	case c.needsRestart():
		return fmt.Sprintf("%s reads the key through %s: restart", ref, c)
	case c == ConsumedVolume && forced:
		return fmt.Sprintf("%s reads the key through a volume mount: restart (restart_volume_mounts)", ref)
	case c == ConsumedVolume:
		return fmt.Sprintf("%s reads the key through a volume mount: no restart, the kubelet updates the file; verification waits for its sync", ref)
	}
	return fmt.Sprintf("%s does not read the key in its pod template: restart anyway, as listed", ref)
}

func joinLines(lines []string) string { return strings.Join(lines, "; ") }
