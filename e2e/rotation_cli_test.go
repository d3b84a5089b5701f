//go:build e2e

package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/remediation"
)

// rotateCLI runs `authwatch rotate` and returns its standard output,
// standard error and exit code.
func rotateCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), authwatchBin, append([]string{"rotate", "--kubeconfig=" + cluster.Kubeconfig()}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestRotationByHand runs `authwatch rotate` with --plan, --dry-run and
// for real against the DRF API, with no daemon running.
func TestRotationByHand(t *testing.T) {
	ns := newNamespace(t, "rot-cli")
	api := startIribala(t, ns, 5*time.Minute)
	good := api.obtainJWT(t)
	broken := good[:len(good)-4] + "AAAA"
	createRotationSecrets(t, api, broken)
	startClient(t, api, "Bearer", 1)
	config := rotationConfig(t, ns, true, httpSourceYAML(api), "")

	out, errOut, code := rotateCLI(t, rotTarget, "--config="+config, "--plan")
	if code != 0 {
		t.Fatalf("--plan exited %d: %s", code, errOut)
	}
	for _, want := range []string{
		"target " + rotTarget + ": token in Secret " + ns + "/" + rotSecret + " key " + rotKey,
		"obtain: http POST " + api.url + "api/token/",
		"restart: Deployment/town-builder reads the key through env: restart",
		"dry run: nothing is written",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}

	out, errOut, code = rotateCLI(t, rotTarget, "--config="+config, "--dry-run")
	if code != 0 || !strings.Contains(out, "[dry run] patch     planned  would patch Secret") || !strings.Contains(out, ": dry_run (") {
		t.Errorf("--dry-run exited %d:\n%s%s", code, out, errOut)
	}
	if s := getTargetSecret(t, ns); string(s.Data[rotKey]) != broken || s.Annotations[remediation.AnnotationRotationID] != "" {
		t.Fatal("the dry run changed the Secret")
	}

	// The same file with dry_run: false rotates for real.
	config = rotationConfig(t, ns, false, httpSourceYAML(api), "")
	out, errOut, code = rotateCLI(t, rotTarget, "--config="+config)
	if code != 0 {
		t.Fatalf("rotate exited %d:\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"obtain    done     new token obtained", "patch     done", "rollout   done", "verify    done", ": succeeded ("} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	token := string(getTargetSecret(t, ns).Data[rotKey])
	if code, _, err := api.get(t.Context(), "api/towns/", "Bearer "+token); err != nil || code != 200 {
		t.Errorf("the rotated token: HTTP %d (%v), want 200", code, err)
	}
	dep, err := cluster.Client().AppsV1().Deployments(ns).Get(t.Context(), townBuilder, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Annotations[remediation.AnnotationRestartedAt] == "" {
		t.Error("the Deployment was not restarted")
	}
	checkNoTokenIn(t, "rotate output", out+errOut, broken, token, api.password)

	// A source that returns a token the API rejects: the new pods keep
	// failing, and the verification, fed by the command's own log
	// watcher, reports it.
	rejected := good[:len(good)-4] + "BBBB"
	config = rotationConfig(t, ns, false, "        command: {command: [/bin/echo, "+rejected+"]}", "")
	out, errOut, code = rotateCLI(t, rotTarget, "--config="+config)
	if code != 1 || !strings.Contains(out, "not_verified at step verify: remediation: new pods still fail after the rotation") {
		t.Errorf("rotation to a rejected token: exit %d, want 1 and not_verified:\n%s%s", code, out, errOut)
	}
	checkNoTokenIn(t, "rotate output", out+errOut, rejected)

	// An unknown target is a usage error that lists the known ones.
	_, errOut, code = rotateCLI(t, "nope", "--config="+config)
	if code != 2 || !strings.Contains(errOut, `unknown target "nope": the config file defines `+rotTarget) {
		t.Errorf("unknown target: exit %d, %s", code, errOut)
	}
}
