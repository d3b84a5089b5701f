package remediation

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/authwatch/authwatch/rules"
)

func manual() Trigger { return Trigger{Target: testTarget, Manual: true} }

func automatic() Trigger {
	return Trigger{Target: testTarget, Policy: "token-expired", Category: rules.TokenExpired,
		Namespace: testNS, Workload: "Deployment/town-builder", IncidentKey: "inc-1"}
}

func TestRotateSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old := makeJWT(time.Now().Add(-time.Minute), "old")
		h := newHarness(t, testTargetConfig(), testSecretObject(old, nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = makeJWT(time.Now().Add(time.Hour), "new")

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeSucceeded {
			t.Fatalf("outcome = %s at %s (%v), want succeeded", res.Outcome, res.Step, res.Err)
		}

		sec := getSecret(t, h.cs)
		if got := string(sec.Data[testKey]); got != h.source.token {
			t.Error("Secret does not hold the new token")
		}
		st := readState(sec)
		if st.rotationID != res.ID {
			t.Errorf("rotation-id annotation = %q, want %q", st.rotationID, res.ID)
		}
		if st.journal == nil || st.journal.Outcome != OutcomeSucceeded || st.journal.Step != StepDone {
			t.Errorf("journal = %+v, want step done, outcome succeeded", st.journal)
		}
		if len(st.lastHour) != 1 || st.lastRotation.IsZero() {
			t.Errorf("rotations-last-hour = %v, last-rotation = %v, want one entry and a time", st.lastHour, st.lastRotation)
		}

		d, err := h.cs.AppsV1().Deployments(testNS).Get(t.Context(), "town-builder", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Spec.Template.Annotations[AnnotationRestartedAt] == "" {
			t.Error("Deployment pod template has no restartedAt annotation")
		}

		backup, err := h.cs.CoreV1().Secrets(testNS).Get(t.Context(), BackupSecretName(testTarget), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("backup Secret: %v", err)
		}
		if string(backup.Data[backupValueKey]) != old {
			t.Error("backup Secret does not hold the previous token")
		}
		if backup.Labels[labelManagedBy] != labelManagedByName {
			t.Errorf("backup Secret labels = %v, want managed-by authwatch", backup.Labels)
		}

		var reasons []string
		for _, e := range events(t, h.cs) {
			if e.InvolvedObject.Kind != "Deployment" || e.InvolvedObject.Name != "town-builder" {
				t.Errorf("event %s on %s/%s, want Deployment/town-builder", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name)
			}
			reasons = append(reasons, e.Reason)
		}
		want := []string{"TokenObtained", "TokenValidated", "TokenBackedUp", "SecretPatched", "RolloutRestarted", "RolloutComplete", "RotationVerified"}
		if diff := cmp.Diff(want, sortedLike(reasons, want)); diff != "" {
			t.Errorf("event reasons (-want +got):\n%s", diff)
		}

		if rep := h.reporter.final(t); rep.Outcome != OutcomeSucceeded || rep.Trigger.IncidentKey != "inc-1" {
			t.Errorf("final report = %+v, want succeeded for incident inc-1", rep)
		}
		if got := testutil.ToFloat64(h.rot.metrics.rotations.WithLabelValues(testTarget, "succeeded")); got != 1 {
			t.Errorf("rotations_total{result=succeeded} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(h.rot.metrics.lastSuccess.WithLabelValues(testTarget)); got == 0 {
			t.Error("last success timestamp not set")
		}
	})
}

// sortedLike orders got by the position of each entry in want, keeping
// unknown entries at the end, so that the comparison ignores the order in
// which the fake lists Events.
func sortedLike(got, want []string) []string {
	pos := map[string]int{}
	for i, w := range want {
		pos[w] = i
	}
	out := make([]string, 0, len(got))
	for _, w := range want {
		for _, g := range got {
			if g == w {
				out = append(out, g)
			}
		}
	}
	for _, g := range got {
		if _, ok := pos[g]; !ok {
			out = append(out, g)
		}
	}
	return out
}

func TestRotateDryRunWritesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := testTargetConfig()
		target.DryRun = nil // the default
		h := newHarness(t, target, testSecretObject("old-token", nil), testDeployment())
		h.source.token = "new-token"

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeDryRun {
			t.Fatalf("outcome = %s (%v), want dry_run", res.Outcome, res.Err)
		}
		if w := writes(h.cs); len(w) != 0 {
			t.Errorf("dry run wrote %v", w)
		}
		if ev := events(t, h.cs); len(ev) != 0 {
			t.Errorf("dry run recorded %d Events", len(ev))
		}
		if n := h.source.calls.Load(); n != 0 {
			t.Errorf("dry run called the token source %d times; a source may revoke the old token", n)
		}
		planned := 0
		for _, rep := range h.reporter.reports {
			if rep.State == StatePlanned {
				planned++
				if !rep.DryRun {
					t.Errorf("report %s not marked dry run", rep.Step)
				}
			}
		}
		if planned != 7 {
			t.Errorf("planned steps reported = %d, want 7", planned)
		}
	})
}

func TestRotateFailuresWriteNothingFurther(t *testing.T) {
	tests := []struct {
		name    string
		token   string
		srcErr  error
		step    Step
		wantErr error
	}{
		{name: "source fails", srcErr: errors.New("remediation: token source failed: connection refused"), step: StepObtain},
		{name: "garbage", token: "not a token\n<html>", step: StepValidate, wantErr: ErrInvalidToken},
		{name: "empty", token: "", step: StepValidate, wantErr: ErrInvalidToken},
		{name: "expired JWT", token: "expired", step: StepValidate, wantErr: ErrInvalidToken},
		{name: "same token", token: "same", step: StepValidate, wantErr: ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				current := "current-token"
				h := newHarness(t, testTargetConfig(), testSecretObject(current, nil), testDeployment())
				h.source.token, h.source.err = tc.token, tc.srcErr
				switch tc.token {
				case "expired":
					h.source.token = makeJWT(time.Now().Add(-time.Second), "expired")
				case "same":
					h.source.token = current
				}

				res := h.rot.Rotate(t.Context(), automatic())
				if res.Outcome != OutcomeFailed || res.Step != tc.step {
					t.Fatalf("result = %s at %s (%v), want failed at %s", res.Outcome, res.Step, res.Err, tc.step)
				}
				if tc.wantErr != nil && !errors.Is(res.Err, tc.wantErr) {
					t.Errorf("err = %v, want %v", res.Err, tc.wantErr)
				}
				if w := writes(h.cs); len(w) != 0 {
					t.Errorf("wrote %v after a failure at %s", w, tc.step)
				}
				if rep := h.reporter.final(t); rep.Outcome != OutcomeFailed || !strings.Contains(rep.Message, string(tc.step)) {
					t.Errorf("final report = %q (%s), want failed naming step %s", rep.Message, rep.Outcome, tc.step)
				}
				if got := testutil.ToFloat64(h.rot.metrics.rotations.WithLabelValues(testTarget, "failed")); got != 1 {
					t.Errorf("rotations_total{result=failed} = %v, want 1", got)
				}
			})
		})
	}
}

func TestRotatePatchConflictRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"
		conflicts := 0
		h.cs.PrependReactor("patch", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.(k8stesting.PatchAction).GetName() == testSecret && conflicts < 2 {
				conflicts++
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, errors.New("the object has been modified"))
			}
			return false, nil, nil
		})

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeSucceeded {
			t.Fatalf("outcome = %s at %s (%v), want succeeded after conflicts", res.Outcome, res.Step, res.Err)
		}
		if conflicts != 2 {
			t.Errorf("conflicts = %d, want 2", conflicts)
		}
		if got := string(getSecret(t, h.cs).Data[testKey]); got != "new-opaque-token" {
			t.Error("Secret does not hold the new token")
		}
	})
}

func TestRotatePatchConflictPersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		h.source.token = "new-opaque-token"
		h.cs.PrependReactor("patch", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, errors.New("the object has been modified"))
		})

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeFailed || res.Step != StepPatch {
			t.Fatalf("result = %s at %s (%v), want failed at patch", res.Outcome, res.Step, res.Err)
		}
		for _, w := range writes(h.cs) {
			if strings.Contains(w, "deployments") {
				t.Errorf("restarted after a failed patch: %s", w)
			}
		}
	})
}

func TestRotatePatchConflictWithOtherRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		h.source.token = "new-opaque-token"
		h.cs.PrependReactor("patch", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
			// Another replica rotated between our read and our patch.
			obj, _ := h.cs.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, testNS, testSecret)
			s := obj.(*corev1.Secret).DeepCopy()
			s.Annotations = map[string]string{AnnotationRotationID: "other-rotation"}
			_ = h.cs.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, s, testNS)
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, errors.New("the object has been modified"))
		})

		res := h.rot.Rotate(t.Context(), automatic())
		var re *RejectedError
		if res.Outcome != OutcomeRejected || !errors.As(res.Err, &re) || re.Reason != ReasonInFlight {
			t.Fatalf("result = %s (%v), want rejected in_flight", res.Outcome, res.Err)
		}
	})
}

func TestRotateRolloutTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, true)
		h.source.token = "new-opaque-token"

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeFailed || res.Step != StepRollout {
			t.Fatalf("result = %s at %s (%v), want failed at rollout", res.Outcome, res.Step, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "timed out after 1m0s") || !strings.Contains(res.Err.Error(), "old replicas pending termination") {
			t.Errorf("err = %v, want a timeout naming what was missing", res.Err)
		}
		before := len(writes(h.cs))
		st := readState(getSecret(t, h.cs))
		if st.journal == nil || st.journal.Outcome != "" || st.journal.Step != StepRollout {
			t.Errorf("journal = %+v, want step rollout without outcome", st.journal)
		}

		// The unfinished rotation blocks automatic retries.
		time.Sleep(time.Hour)
		res = h.rot.Rotate(t.Context(), automatic())
		var re *RejectedError
		if res.Outcome != OutcomeRejected || !errors.As(res.Err, &re) || re.Reason != ReasonUnfinished {
			t.Errorf("second result = %s (%v), want rejected unfinished", res.Outcome, res.Err)
		}
		if after := len(writes(h.cs)); after != before {
			t.Errorf("rejected rotation wrote %d times", after-before)
		}
	})
}

func TestRotateVerificationFailuresContinue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"

		done := make(chan Result, 1)
		go func() { done <- h.rot.Rotate(t.Context(), automatic()) }()
		waitVerification(t, h.rot)
		rs := newReplicaSetName(t, h.cs)
		if rs == "" {
			t.Fatal("no new ReplicaSet")
		}
		// The old pod keeps failing, which must not count, and a new pod
		// fails too, which must.
		h.rot.HandleMatch(match("town-builder-0ld-abcde", rules.TokenExpired))
		h.rot.HandleMatch(match(rs+"-xyz12", rules.AuthFailure))
		writesBefore := len(writes(h.cs))

		res := <-done
		if res.Outcome != OutcomeNotVerified || res.Step != StepVerify {
			t.Fatalf("result = %s at %s (%v), want not_verified at verify", res.Outcome, res.Step, res.Err)
		}
		if !strings.Contains(res.Err.Error(), rs+"-xyz12") || strings.Contains(res.Err.Error(), "0ld") {
			t.Errorf("err = %v, want the new pod named and the old one left out", res.Err)
		}
		if after := len(writes(h.cs)); after != writesBefore {
			t.Errorf("wrote %d times after verification failed", after-writesBefore)
		}
		if st := readState(getSecret(t, h.cs)); st.journal.Outcome != "" {
			t.Errorf("journal outcome = %q, want none written", st.journal.Outcome)
		}
		if rep := h.reporter.final(t); rep.Outcome != OutcomeNotVerified {
			t.Errorf("final report outcome = %s, want not_verified", rep.Outcome)
		}
	})
}

func TestRotateOldPodFailuresIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"

		done := make(chan Result, 1)
		go func() { done <- h.rot.Rotate(t.Context(), automatic()) }()
		waitVerification(t, h.rot)
		for range 5 {
			h.rot.HandleMatch(match("town-builder-0ld-abcde", rules.TokenExpired))
		}
		if res := <-done; res.Outcome != OutcomeSucceeded {
			t.Fatalf("result = %s at %s (%v), want succeeded", res.Outcome, res.Step, res.Err)
		}
	})
}

func TestRotateLeaseLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"
		// The Lease is lost right after the token patch.
		h.cs.PrependReactor("patch", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			h.leader.lost.Store(true)
			return false, nil, nil
		})

		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeLeaseLost || res.Step != StepRestart {
			t.Fatalf("result = %s at %s (%v), want lease_lost at restart", res.Outcome, res.Step, res.Err)
		}
		var got []string
		for _, w := range writes(h.cs) {
			got = append(got, strings.Fields(w)[1])
		}
		if diff := cmp.Diff([]string{"secrets", "secrets"}, got); diff != "" {
			t.Errorf("writes: backup and token patch only (-want +got):\n%s", diff)
		}
		for _, e := range events(t, h.cs) {
			if e.Reason == "RolloutRestarted" || e.Reason == "RotationFailed" {
				t.Errorf("Event %s recorded after the Lease was lost", e.Reason)
			}
		}
		if rep := h.reporter.final(t); rep.Outcome != OutcomeLeaseLost {
			t.Errorf("final report outcome = %s, want lease_lost", rep.Outcome)
		}
	})
}

func TestRotateRejections(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	recent := now.Add(-time.Minute).Format(time.RFC3339)
	tests := []struct {
		name        string
		annotations map[string]string
		labels      map[string]string
		owners      []metav1.OwnerReference
		mutate      func(*Target, *appsv1.Deployment)
		trigger     Trigger
		reason      string
		detail      string
	}{
		{name: "kill switch annotation", annotations: map[string]string{AnnotationRotation: "disabled"}, trigger: manual(), reason: ReasonKillSwitch},
		{name: "kill switch config", mutate: func(t *Target, _ *appsv1.Deployment) { t.Disabled = true }, trigger: manual(), reason: ReasonKillSwitch},
		{name: "cooldown", annotations: map[string]string{AnnotationLastRotation: recent}, trigger: automatic(), reason: ReasonCooldown},
		{name: "max per hour", annotations: map[string]string{
			AnnotationRotationsLastHour: strings.Join([]string{recent, recent, recent}, ","),
		}, trigger: manual(), reason: ReasonRateLimit},
		{name: "external secret", owners: []metav1.OwnerReference{{APIVersion: "external-secrets.io/v1beta1", Kind: "ExternalSecret", Name: "tb"}},
			trigger: manual(), reason: ReasonOwned, detail: "ExternalSecret tb"},
		{name: "sealed secret", owners: []metav1.OwnerReference{{APIVersion: "bitnami.com/v1alpha1", Kind: "SealedSecret", Name: "tb"}},
			trigger: manual(), reason: ReasonOwned, detail: "SealedSecret tb"},
		{name: "argo cd", labels: map[string]string{"argocd.argoproj.io/instance": "town"}, trigger: manual(), reason: ReasonOwned, detail: "Argo CD application town"},
		{name: "flux", labels: map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps"}, trigger: manual(), reason: ReasonOwned, detail: "Flux Kustomization apps"},
		{name: "paused deployment", mutate: func(_ *Target, d *appsv1.Deployment) { d.Spec.Paused = true }, trigger: manual(), reason: ReasonPaused, detail: "paused"},
		{name: "periodic recurrence", annotations: map[string]string{AnnotationHistory: strings.Join([]string{
			now.Add(-60 * time.Minute).Format(time.RFC3339), now.Add(-45 * time.Minute).Format(time.RFC3339),
			now.Add(-30 * time.Minute).Format(time.RFC3339), now.Add(-15 * time.Minute).Format(time.RFC3339),
		}, ",")}, trigger: automatic(), reason: ReasonCircuitOpen, detail: "rotations recur every 15m0s"},
		{name: "failed rotation", annotations: map[string]string{AnnotationJournal: `{"id":"r1","holder":"a","step":"verify","started":"2026-01-01T10:00:00Z","updated":"2026-01-01T10:00:00Z"}`},
			trigger: automatic(), reason: ReasonUnfinished, detail: "stopped at step verify"},
		{name: "in flight elsewhere", annotations: map[string]string{AnnotationJournal: `{"id":"r1","holder":"a","step":"rollout","started":"2026-01-01T11:59:00Z","updated":"2026-01-01T11:59:30Z"}`},
			trigger: manual(), reason: ReasonInFlight, detail: "rotation r1 by a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				time.Sleep(time.Until(now)) // the bubble's clock starts in 2000
				target := testTargetConfig()
				d := testDeployment()
				if tc.mutate != nil {
					tc.mutate(&target, d)
				}
				sec := testSecretObject("old", tc.annotations)
				sec.Labels, sec.OwnerReferences = tc.labels, tc.owners
				h := newHarness(t, target, sec, d)
				h.source.token = "new-opaque-token"

				res := h.rot.Rotate(t.Context(), tc.trigger)
				var re *RejectedError
				if res.Outcome != OutcomeRejected || !errors.As(res.Err, &re) || re.Reason != tc.reason {
					t.Fatalf("result = %s (%v), want rejected %s", res.Outcome, res.Err, tc.reason)
				}
				if !strings.Contains(res.Err.Error(), tc.detail) {
					t.Errorf("err = %v, want it to contain %q", res.Err, tc.detail)
				}
				if w := writes(h.cs); len(w) != 0 {
					t.Errorf("rejected rotation wrote %v", w)
				}
				if n := h.source.calls.Load(); n != 0 {
					t.Errorf("rejected rotation called the source %d times", n)
				}
				if rep := h.reporter.final(t); rep.Outcome != OutcomeRejected {
					t.Errorf("final report outcome = %s, want rejected", rep.Outcome)
				}
				if tc.reason == ReasonCircuitOpen {
					if got := testutil.ToFloat64(h.rot.metrics.circuitOpen.WithLabelValues(testTarget)); got != 1 {
						t.Errorf("circuit_open = %v, want 1", got)
					}
				}
			})
		})
	}
}

func TestRotateSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"

		done := make(chan Result, 1)
		go func() { done <- h.rot.Rotate(t.Context(), automatic()) }()
		waitVerification(t, h.rot)
		second := h.rot.Rotate(t.Context(), manual())
		var re *RejectedError
		if second.Outcome != OutcomeRejected || !errors.As(second.Err, &re) || re.Reason != ReasonInFlight {
			t.Errorf("second rotation = %s (%v), want rejected in_flight", second.Outcome, second.Err)
		}
		if res := <-done; res.Outcome != OutcomeSucceeded {
			t.Errorf("first rotation = %s (%v), want succeeded", res.Outcome, res.Err)
		}
		if n := h.source.calls.Load(); n != 1 {
			t.Errorf("source calls = %d, want 1", n)
		}
	})
}

func TestRotateCircuitBreakerAfterPeriodicRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := testTargetConfig()
		target.Cooldown = time.Minute
		target.MaxPerHour = 10
		target.CircuitBreaker.PeriodicRepeats = 2
		h := newHarness(t, target, testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)

		var outcomes []Outcome
		for i := range 4 {
			h.source.token = makeJWT(time.Now().Add(15*time.Minute), string(rune('a'+i)))
			outcomes = append(outcomes, h.rot.Rotate(t.Context(), automatic()).Outcome)
			// The JWT expires 15 minutes after each rotation.
			time.Sleep(15*time.Minute - time.Since(readState(getSecret(t, h.cs)).lastRotation))
		}
		want := []Outcome{OutcomeSucceeded, OutcomeSucceeded, OutcomeRejected, OutcomeRejected}
		if diff := cmp.Diff(want, outcomes); diff != "" {
			t.Errorf("outcomes (-want +got):\n%s", diff)
		}
		if n := h.source.calls.Load(); n != 2 {
			t.Errorf("source calls = %d, want 2", n)
		}
	})
}

func TestResumeIsReadOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("new", nil), testDeployment())
		fakeController(t, h.cs, false)
		at := time.Now().Add(-10 * time.Second)
		// Another replica patched and restarted, then lost the Lease.
		if _, err := h.rot.restart(t.Context(), testNS, WorkloadRef{Kind: "Deployment", Name: "town-builder"}, at); err != nil {
			t.Fatal(err)
		}
		sec := getSecret(t, h.cs)
		sec.Annotations = map[string]string{AnnotationJournal: `{"id":"r-old","holder":"authwatch-1","step":"rollout","started":"` +
			at.Add(-5*time.Second).UTC().Format(time.RFC3339) + `","updated":"` + at.UTC().Format(time.RFC3339) +
			`","restarted_at":"` + at.UTC().Format(time.RFC3339Nano) + `"}`}
		if _, err := h.cs.CoreV1().Secrets(testNS).Update(t.Context(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.cs.ClearActions()

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.rot.Run(ctx) }()
		for h.reporter.finalOrNil() == nil {
			time.Sleep(time.Second)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		rep := h.reporter.final(t)
		if rep.Outcome != OutcomeSucceeded || rep.RotationID != "r-old" {
			t.Errorf("final report = %s for %s, want succeeded for r-old", rep.Outcome, rep.RotationID)
		}
		if w := writes(h.cs); len(w) != 0 {
			t.Errorf("resumed rotation wrote %v", w)
		}
		if ev := events(t, h.cs); len(ev) != 0 {
			t.Errorf("resumed rotation recorded %d Events", len(ev))
		}
		if n := h.source.calls.Load(); n != 0 {
			t.Errorf("resumed rotation called the source %d times", n)
		}
	})
}

func TestRunTriggersMatchingTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.rot.Run(ctx) }()

		// Another policy, namespace or workload selects nothing.
		other := automatic()
		other.Target, other.Policy = "", "errors"
		h.rot.Trigger(other)
		other = automatic()
		other.Target, other.Workload = "", "Deployment/elsewhere"
		h.rot.Trigger(other)
		trig := automatic()
		trig.Target = ""
		h.rot.Trigger(trig)

		for h.reporter.finalOrNil() == nil {
			time.Sleep(time.Second)
		}
		cancel()
		<-done
		if rep := h.reporter.final(t); rep.Outcome != OutcomeSucceeded || rep.Trigger.Policy != "token-expired" {
			t.Errorf("final report = %s for policy %q, want succeeded for token-expired", rep.Outcome, rep.Trigger.Policy)
		}
		if n := h.source.calls.Load(); n != 1 {
			t.Errorf("source calls = %d, want 1", n)
		}
	})
}

func TestCheckExpiryExportsAndRenews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := testTargetConfig()
		target.RenewBefore = 10 * time.Minute
		exp := time.Now().Add(5 * time.Minute).Truncate(time.Second)
		h := newHarness(t, target, testSecretObject(makeJWT(exp, "cur"), nil), testDeployment())
		h.rot.checkExpiry(t.Context())
		if got := testutil.ToFloat64(h.rot.metrics.expiry.WithLabelValues(testTarget)); got != float64(exp.Unix()) {
			t.Errorf("expiry gauge = %v, want %d", got, exp.Unix())
		}
		select {
		case trig := <-h.rot.triggers:
			if trig.Target != testTarget || !strings.Contains(trig.Reason, "expires at") {
				t.Errorf("trigger = %+v, want a renewal of %s", trig, testTarget)
			}
		default:
			t.Error("no renewal triggered 5m before exp with renew_before 10m")
		}
	})
}

func waitVerification(t *testing.T, r *Rotator) {
	t.Helper()
	for range 600 {
		r.mu.Lock()
		n := len(r.verifications)
		r.mu.Unlock()
		if n > 0 {
			// Let the rollout finish so that the new ReplicaSet exists.
			for range 10 {
				time.Sleep(time.Second)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("verification never started")
}

func match(pod string, c rules.Category) *rules.Match {
	return &rules.Match{
		RuleID: "http-401", Category: c, Severity: rules.SeverityError,
		Line: rules.Line{Time: time.Now(), Source: rules.Source{Namespace: testNS, Pod: pod, Workload: "Deployment/town-builder"}},
	}
}

func (r *recordingReporter) finalOrNil() *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.reports {
		if r.reports[i].Final {
			return &r.reports[i]
		}
	}
	return nil
}

func TestRotateVolumeMountSkipsRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := testTargetConfig()
		target.VolumeSyncWait = 20 * time.Second
		d := testDeployment()
		d.Spec.Template.Spec.Containers[0].Env = nil
		d.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tok", MountPath: "/var/run/tok"}}
		d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: testSecret},
		}}}
		h := newHarness(t, target, testSecretObject("old", nil), d)
		h.source.token = "new-opaque-token"

		start := time.Now()
		res := h.rot.Rotate(t.Context(), automatic())
		if res.Outcome != OutcomeSucceeded {
			t.Fatalf("outcome = %s at %s (%v), want succeeded", res.Outcome, res.Step, res.Err)
		}
		for _, w := range writes(h.cs) {
			if strings.Contains(w, "deployments") {
				t.Errorf("restarted a workload that reads the key from a volume: %s", w)
			}
		}
		if took := time.Since(start); took < target.VolumeSyncWait+target.VerifyWindow {
			t.Errorf("rotation took %s, want at least volume_sync_wait + verify_window = %s", took, target.VolumeSyncWait+target.VerifyWindow)
		}
		skipped := false
		for _, rep := range h.reporter.reports {
			if rep.Step == StepRestart && rep.State == StateSkipped && strings.Contains(rep.Message, "volume mount: no restart") {
				skipped = true
			}
		}
		if !skipped {
			t.Error("no report that the restart was skipped for the volume mount")
		}
	})
}

func TestRolloutStatusOtherKinds(t *testing.T) {
	two := int32(2)
	tests := []struct {
		name string
		got  rolloutStatus
		done bool
		wait string
	}{
		{name: "statefulset updating", got: statefulSetStatus(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: &two},
			Status: appsv1.StatefulSetStatus{UpdatedReplicas: 1, ReadyReplicas: 2}}), wait: "1 of 2 new replicas updated"},
		{name: "statefulset revision", got: statefulSetStatus(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: &two},
			Status: appsv1.StatefulSetStatus{UpdatedReplicas: 2, ReadyReplicas: 2, CurrentRevision: "a", UpdateRevision: "b"}}), wait: "current revision"},
		{name: "statefulset done", got: statefulSetStatus(&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: &two},
			Status: appsv1.StatefulSetStatus{UpdatedReplicas: 2, ReadyReplicas: 2, CurrentRevision: "b", UpdateRevision: "b"}}), done: true},
		{name: "daemonset unobserved", got: daemonSetStatus(&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Generation: 2},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1}}), wait: "not observed"},
		{name: "daemonset unavailable", got: daemonSetStatus(&appsv1.DaemonSet{
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 2}}), wait: "2 of 3 pods available"},
		{name: "daemonset done", got: daemonSetStatus(&appsv1.DaemonSet{
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 3}}), done: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got.done != tc.done || !strings.Contains(tc.got.waiting, tc.wait) {
				t.Errorf("status = %+v, want done %v waiting %q", tc.got, tc.done, tc.wait)
			}
		})
	}
}

func TestRotateVerificationCannotReadPods(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testTargetConfig(), testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)
		h.source.token = "new-opaque-token"
		h.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("RBAC"))
		})

		done := make(chan Result, 1)
		go func() { done <- h.rot.Rotate(t.Context(), automatic()) }()
		waitVerification(t, h.rot)
		h.rot.HandleMatch(match("town-builder-unknown-abcde", rules.TokenExpired))
		res := <-done
		if res.Outcome != OutcomeNotVerified || !strings.Contains(res.Err.Error(), "to tell whether it is new") {
			t.Fatalf("result = %s (%v), want not_verified naming the unreadable pod", res.Outcome, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "permission denied to get pods") || !strings.Contains(res.Err.Error(), "fix: grant get on pods") {
			t.Errorf("err = %v, want the verb, the resource and the fix", res.Err)
		}
		if got := permissionErrors(t, h.reg, "get", "pods"); got < 1 {
			t.Errorf(`authwatch_api_permission_errors_total{verb="get",resource="pods"} = %v, want >= 1`, got)
		}
	})
}

func TestRotateRenewalsBypassCircuitBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := testTargetConfig()
		target.Cooldown = time.Minute
		target.MaxPerHour = 10
		target.CircuitBreaker.PeriodicRepeats = 2
		h := newHarness(t, target, testSecretObject("old", nil), testDeployment())
		fakeController(t, h.cs, false)

		renewal := Trigger{Target: testTarget, Renewal: true, Reason: "token expires soon"}
		for i := range 4 {
			h.source.token = makeJWT(time.Now().Add(15*time.Minute), string(rune('a'+i)))
			if res := h.rot.Rotate(t.Context(), renewal); res.Outcome != OutcomeSucceeded {
				t.Fatalf("renewal %d = %s (%v), want succeeded", i, res.Outcome, res.Err)
			}
			time.Sleep(10*time.Minute - time.Since(readState(getSecret(t, h.cs)).lastRotation))
		}
		st := readState(getSecret(t, h.cs))
		if len(st.history) != 0 {
			t.Errorf("history = %v, want renewals left out of the breaker's history", st.history)
		}
		if len(st.lastHour) < 4 {
			t.Errorf("rotations-last-hour = %v, want every renewal counted for max_per_hour", st.lastHour)
		}
	})
}

func TestResumeBeforeRestartReportsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now().UTC()
		journal := `{"id":"r-old","holder":"authwatch-1","step":"patch","started":"` + now.Format(time.RFC3339) +
			`","updated":"` + now.Format(time.RFC3339) + `"}`
		h := newHarness(t, testTargetConfig(), testSecretObject("new", map[string]string{AnnotationJournal: journal}), testDeployment())

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.rot.Run(ctx) }()
		for h.reporter.finalOrNil() == nil {
			time.Sleep(time.Second)
		}
		cancel()
		<-done

		rep := h.reporter.final(t)
		if rep.Outcome != OutcomeFailed || !strings.Contains(rep.Message, "stopped at step patch before restarting the workloads") {
			t.Errorf("final report = %s %q, want failed naming the step", rep.Outcome, rep.Message)
		}
		if w := writes(h.cs); len(w) != 0 {
			t.Errorf("resumed rotation wrote %v", w)
		}
	})
}
