//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestRotationCircuitBreakerStopsPeriodicRotation gives the API a 12s
// access token lifetime: every rotation "works" until the new token
// expires. After two rotations at the same period the breaker rejects the
// third and names the lifetime as the cause.
func TestRotationCircuitBreakerStopsPeriodicRotation(t *testing.T) {
	ns := newNamespace(t, "rot-circuit")
	api := startIribala(t, ns, 12*time.Second)
	initial := api.obtainJWT(t)
	createRotationSecrets(t, api, initial)
	startClient(t, api, "Bearer", 1)
	breaker := "      circuit_breaker: {periodic_repeats: 2, tolerance: 0.3}"
	d := startAuthwatch(t, cluster.Kubeconfig(), "--config="+rotationConfig(t, ns, false, httpSourceYAML(api), breaker),
		"--checkpoint-configmap=")

	waitRotations(t, []*daemon{d}, "succeeded", 2, 2*time.Minute)
	waitRotations(t, []*daemon{d}, "rejected", 1, time.Minute)

	s, err := d.metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.sum("authwatch_token_rotation_circuit_open", map[string]string{"target": rotTarget}); got != 1 {
		t.Errorf("authwatch_token_rotation_circuit_open = %v, want 1", got)
	}
	if got := s.sum("authwatch_token_rotations_total", map[string]string{"target": rotTarget, "result": "succeeded"}); got != 2 {
		t.Errorf("succeeded rotations = %v, want 2", got)
	}
	if h := rotationHistory(getTargetSecret(t, ns)); len(h) != 2 {
		t.Errorf("rotation history %v, want two rotations", h)
	}
	out := d.output()
	if !strings.Contains(out, "rotation rejected (circuit_open): rotations recur every") || !strings.Contains(out, "use a refresh flow or a long-lived service token") {
		t.Error("the rejection does not name the periodic recurrence and its fix")
	}
	checkNoTokenIn(t, "authwatch output", out, initial, api.password)
}
