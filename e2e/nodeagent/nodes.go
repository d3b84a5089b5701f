package nodeagent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// heartbeatInterval is how often the Ready condition is renewed, as often
// as a kubelet's default node status update.
const heartbeatInterval = 10 * time.Second

// registerNodes creates the agent's Nodes, or takes over existing ones, and
// reports them Ready.
func (a *Agent) registerNodes(ctx context.Context) error {
	for _, name := range a.opts.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: name,
				Labels: map[string]string{
					corev1.LabelHostname:   name,
					corev1.LabelOSStable:   "linux",
					corev1.LabelArchStable: "amd64",
				},
			},
		}
		_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("nodeagent: register node %s: %w", name, err)
		}
		if err := a.updateNodeStatus(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) updateNodeStatus(ctx context.Context, name string) error {
	node, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("nodeagent: get node %s: %w", name, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node.Status.Capacity = capacity
	node.Status.Allocatable = capacity
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
		{Type: corev1.NodeHostName, Address: name},
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(a.port)
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion:          "v1.37.2",
		ContainerRuntimeVersion: "authwatch-nodeagent://1",
		OperatingSystem:         "linux",
		Architecture:            "amd64",
	}
	ready := corev1.NodeCondition{
		Type:               corev1.NodeReady,
		Status:             corev1.ConditionTrue,
		Reason:             "KubeletReady",
		Message:            "authwatch node agent is posting ready status",
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
	}
	replaced := false
	for i, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				ready.LastTransitionTime = c.LastTransitionTime
			}
			node.Status.Conditions[i] = ready
			replaced = true
		}
	}
	if !replaced {
		node.Status.Conditions = append(node.Status.Conditions, ready)
	}
	if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("nodeagent: update node %s status: %w", name, err)
	}
	return nil
}

// heartbeat keeps the Nodes Ready until ctx ends. Failures, such as while
// the API server is down, are logged and retried at the next beat.
func (a *Agent) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(heartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for _, name := range a.opts.Nodes {
			if err := a.updateNodeStatus(ctx, name); err != nil && ctx.Err() == nil {
				a.log.Warn("node heartbeat failed", "node", name, "err", err)
			}
		}
	}
}

// bind schedules pod to the agent's next node, as the default scheduler
// would through the pods/binding subresource.
func (a *Agent) bind(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	node := a.opts.Nodes[a.next%len(a.opts.Nodes)]
	a.next++
	a.mu.Unlock()
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	switch {
	case err == nil:
		a.log.Debug("pod bound", "namespace", pod.Namespace, "pod", pod.Name, "node", node)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// Already bound, or deleted meanwhile: the informer brings news.
	default:
		if ctx.Err() == nil {
			a.log.Warn("pod binding failed", "namespace", pod.Namespace, "pod", pod.Name, "node", node, "err", err)
		}
	}
}
