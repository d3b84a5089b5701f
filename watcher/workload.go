package watcher

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// workloadOf names the workload that owns pod as "<Kind>/<name>" without
// reading any other object. A ReplicaSet whose name ends in the pod's
// pod-template-hash belongs to the Deployment named by the rest. A Job
// whose name ends in a run number of 8 or more digits (as a CronJob names
// its Jobs) belongs to that CronJob. A pod without a controller is
// "Pod/<name>".
func workloadOf(pod *corev1.Pod) string {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "Pod/" + pod.Name
	}
	switch owner.Kind {
	case "ReplicaSet":
		if hash := pod.Labels["pod-template-hash"]; hash != "" {
			if name, ok := strings.CutSuffix(owner.Name, "-"+hash); ok {
				return "Deployment/" + name
			}
		}
	case "Job":
		if i := strings.LastIndexByte(owner.Name, '-'); i > 0 && isDigits(owner.Name[i+1:]) && len(owner.Name)-i-1 >= 8 {
			return "CronJob/" + owner.Name[:i]
		}
	}
	return owner.Kind + "/" + owner.Name
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
