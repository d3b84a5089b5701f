package kubetest

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NewPod returns a pending pod on node-1 with one regular container per
// name and no container statuses. Its UID is namespace/name/uid, so a
// test may recreate a pod under a new UID.
func NewPod(namespace, name, uid string, labels map[string]string, containers ...string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name, UID: types.UID(namespace + "/" + name + "/" + uid),
			Labels: labels,
		},
		Spec:   corev1.PodSpec{NodeName: "node-1"},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, c := range containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "example/" + c})
	}
	return pod
}

func status(list *[]corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range *list {
		if (*list)[i].Name == name {
			return &(*list)[i]
		}
	}
	*list = append(*list, corev1.ContainerStatus{Name: name})
	return &(*list)[len(*list)-1]
}

// SetRunning marks container (regular, or init when init is true) as
// running instance id since started, and the pod as running.
func SetRunning(pod *corev1.Pod, container, id string, started time.Time, init bool) {
	list := &pod.Status.ContainerStatuses
	if init {
		list = &pod.Status.InitContainerStatuses
	}
	st := status(list, container)
	st.ContainerID = id
	st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}
	if !init {
		st.Ready = true
		pod.Status.Phase = corev1.PodRunning
	}
}

// SetTerminated marks the current instance of container as terminated.
func SetTerminated(pod *corev1.Pod, container string, started, finished time.Time, exitCode int32, init bool) {
	list := &pod.Status.ContainerStatuses
	if init {
		list = &pod.Status.InitContainerStatuses
	}
	st := status(list, container)
	st.Ready = false
	st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ContainerID: st.ContainerID, ExitCode: exitCode,
		StartedAt: metav1.NewTime(started), FinishedAt: metav1.NewTime(finished),
	}}
}

// Restart moves the current instance of container to its last state
// (terminated at finished) and starts instance newID.
func Restart(pod *corev1.Pod, container, newID string, finished time.Time) {
	st := status(&pod.Status.ContainerStatuses, container)
	var started metav1.Time
	if st.State.Running != nil {
		started = st.State.Running.StartedAt
	}
	st.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ContainerID: st.ContainerID, ExitCode: 1, Reason: "Error",
		StartedAt: started, FinishedAt: metav1.NewTime(finished),
	}}
	st.RestartCount++
	st.ContainerID = newID
	st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(finished)}}
}
