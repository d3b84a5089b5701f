//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/remediation"
)

// TestRotationHTTPSourceRecovers lets the client's SimpleJWT access token
// expire and checks that authwatch logs in at the obtain-pair view,
// patches the Secret, rolls the Deployment and verifies that the new pods
// succeed.
func TestRotationHTTPSourceRecovers(t *testing.T) {
	ns := newNamespace(t, "rot-http")
	api := startIribala(t, ns, 20*time.Second)
	initial := api.obtainJWT(t)
	issued := time.Now()
	createRotationSecrets(t, api, initial)
	startClient(t, api, "Bearer", 1)
	d := startAuthwatch(t, cluster.Kubeconfig(), "--config="+rotationConfig(t, ns, false, httpSourceYAML(api), ""),
		"--checkpoint-configmap=")

	firstFail := waitFirstFailure(t, ns, time.Until(issued.Add(time.Minute)))
	verified := waitRotations(t, []*daemon{d}, "succeeded", 1, 2*time.Minute)
	logBenchmark(t, "http source, first 401 to verified recovery", verified.Sub(firstFail))

	sec := getTargetSecret(t, ns)
	token := string(sec.Data[rotKey])
	if token == initial {
		t.Fatal("the Secret still holds the expired token")
	}
	if code, _, err := api.get(t.Context(), "api/towns/", "Bearer "+token); err != nil || code != 200 {
		t.Errorf("the rotated token: HTTP %d (%v), want 200", code, err)
	}
	if sec.Annotations[remediation.AnnotationRotationID] == "" || sec.Annotations[remediation.AnnotationLastRotation] == "" {
		t.Errorf("rotation annotations missing: %v", sec.Annotations)
	}
	if j := sec.Annotations[remediation.AnnotationJournal]; !strings.Contains(j, `"outcome":"succeeded"`) {
		t.Errorf("journal = %s, want outcome succeeded", j)
	}
	dep, err := cluster.Client().AppsV1().Deployments(ns).Get(t.Context(), townBuilder, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restartedAt := dep.Spec.Template.Annotations[remediation.AnnotationRestartedAt]
	if restartedAt == "" {
		t.Fatal("the Deployment's pod template has no restartedAt annotation")
	}
	at, err := time.Parse(time.RFC3339Nano, restartedAt)
	if err != nil {
		t.Fatal(err)
	}
	waitClientRecovered(t, ns, at, time.Minute)

	backup, err := cluster.Client().CoreV1().Secrets(ns).Get(t.Context(), remediation.BackupSecretName(rotTarget), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("backup Secret: %v", err)
	}
	if string(backup.Data["previous"]) != initial {
		t.Error("the backup Secret does not hold the replaced token")
	}

	reasons, eventText := rotationEvents(t, ns)
	for _, want := range []string{"TokenObtained", "SecretPatched", "RolloutRestarted", "RolloutComplete", "RotationVerified"} {
		if !slices.Contains(reasons, want) {
			t.Errorf("no %s Event; got %v", want, reasons)
		}
	}
	s, err := d.metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.sum("authwatch_token_rotation_last_success_timestamp_seconds", map[string]string{"target": rotTarget}); got < float64(firstFail.Unix()) {
		t.Errorf("last success timestamp = %v, want after the first 401", got)
	}
	// The expiry gauge is read at start and every minute after, so here it
	// still shows the exp of the first token.
	if got, want := s.sum("authwatch_token_expiry_timestamp_seconds", map[string]string{"target": rotTarget}), jwtExp(t, initial); got != want {
		t.Errorf("authwatch_token_expiry_timestamp_seconds = %v, want the first token's exp %v", got, want)
	}
	metricsText, _, err := d.get(t.Context(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	checkNoTokenIn(t, "metrics", metricsText, initial, token, api.password)
	out := d.output()
	checkNoTokenIn(t, "authwatch output", out, initial, token, api.password)
	checkNoTokenIn(t, "Events", eventText, initial, token, api.password)
}

// jwtExp returns the exp claim of a JWT.
func jwtExp(t *testing.T, token string) float64 {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.Exp
}
