//go:build e2e

package e2e

import (
	"regexp"
	"testing"
	"time"
)

// drfKeyPattern picks the key out of `manage.py drf_create_token` output.
var drfKeyPattern = regexp.MustCompile(`Generated token ([0-9a-f]{40}) for user`)

// TestRotationExecSourceRecovers revokes the client's DRF token, which
// never expires, and checks that authwatch runs `drf_create_token -r` in
// the API's pod through pods/exec, patches the Secret, rolls the
// Deployment and verifies that the new pods succeed.
func TestRotationExecSourceRecovers(t *testing.T) {
	ns := newNamespace(t, "rot-exec")
	api := startIribala(t, ns, 5*time.Minute)
	m := drfKeyPattern.FindStringSubmatch(api.manage(t, "drf_create_token", rotUser))
	if m == nil {
		t.Fatal("drf_create_token printed no key")
	}
	initial := m[1]
	createRotationSecrets(t, api, initial)
	startClient(t, api, "Token", 1)

	source := `        exec:
          selector: app=` + iribalaName + `
          command: [` + drfPython + `, manage.py, drf_create_token, -r, ` + rotUser + `]
          token_pattern: 'Generated token ([0-9a-f]{40}) for user'
          timeout: 30s`
	d := startAuthwatch(t, cluster.Kubeconfig(), "--config="+rotationConfig(t, ns, false, source, ""), "--checkpoint-configmap=")
	waitClientRecovered(t, ns, time.Time{}, time.Minute) // the key works before it is revoked

	// Revoke the key as an operator would. The rotation replaces the key
	// printed here again, so no client ever uses it.
	api.manage(t, "drf_create_token", "-r", rotUser)
	revoked := time.Now()
	firstFail := waitFirstFailure(t, ns, time.Minute)
	if firstFail.Before(revoked.Add(-time.Second)) {
		t.Fatalf("a 401 at %s, before the key was revoked at %s", firstFail, revoked)
	}
	verified := waitRotations(t, []*daemon{d}, "succeeded", 1, 2*time.Minute)
	logBenchmark(t, "exec source (drf_create_token -r), first 401 to verified recovery", verified.Sub(firstFail))

	token := string(getTargetSecret(t, ns).Data[rotKey])
	if token == initial || !drfKeyPattern.MatchString("Generated token "+token+" for user") {
		t.Fatal("the Secret does not hold a new DRF key")
	}
	if code, body, err := api.get(t.Context(), "api/towns/", "Token "+token); err != nil || code != 200 {
		t.Errorf("the rotated key: HTTP %d %s (%v), want 200", code, body, err)
	}
	if code, _, _ := api.get(t.Context(), "api/towns/", "Token "+initial); code != 401 {
		t.Errorf("the revoked key: HTTP %d, want 401", code)
	}
	waitClientRecovered(t, ns, verified.Add(-time.Minute), time.Minute)
	_, eventText := rotationEvents(t, ns)
	checkNoTokenIn(t, "authwatch output", d.output(), initial, token)
	checkNoTokenIn(t, "Events", eventText, initial, token)
}
