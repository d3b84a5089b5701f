package remediation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/internal/secret"
)

// maxPatchAttempts bounds the re-read-and-retry loop on a conflict.
const maxPatchAttempts = 5

// Labels and annotations that mark a Secret as another controller's. A
// rotation there would be reverted on that controller's next sync.
var foreignMarkers = []struct{ key, owner string }{
	{"argocd.argoproj.io/instance", "Argo CD application"},
	{"argocd.argoproj.io/tracking-id", "Argo CD application"},
	{"kustomize.toolkit.fluxcd.io/name", "Flux Kustomization"},
	{"helm.toolkit.fluxcd.io/name", "Flux HelmRelease"},
}

// foreignOwner returns a description of the controller that owns s, or ""
// when none of the known syncing controllers does.
func foreignOwner(s *corev1.Secret) string {
	for _, ref := range s.OwnerReferences {
		switch {
		case ref.Kind == "ExternalSecret" && strings.HasPrefix(ref.APIVersion, "external-secrets.io/"):
			return "ExternalSecret " + ref.Name
		case ref.Kind == "SealedSecret" && strings.HasPrefix(ref.APIVersion, "bitnami.com/"):
			return "SealedSecret " + ref.Name
		}
	}
	for _, m := range foreignMarkers {
		if v, ok := s.Labels[m.key]; ok {
			return fmt.Sprintf("%s %s (label %s)", m.owner, v, m.key)
		}
		if v, ok := s.Annotations[m.key]; ok {
			return fmt.Sprintf("%s %s (annotation %s)", m.owner, v, m.key)
		}
	}
	return ""
}

// BackupSecretName returns the name of the Secret, in the target's
// namespace, where authwatch keeps the token that a rotation replaced.
func BackupSecretName(target string) string { return "authwatch-rotation-" + target }

// Keys and labels of the backup Secret.
const (
	backupValueKey     = "previous"
	backupHashKey      = "previous-sha256"
	labelManagedBy     = "app.kubernetes.io/managed-by"
	labelManagedByName = "authwatch"
	annotationTarget   = "authwatch.io/target"
)

// writeBackup stores the previous token, or its SHA-256 when the target
// keeps only a hash, in the backup Secret, creating it on first use.
func (r *Rotator) writeBackup(ctx context.Context, t *Target, id string, previous []byte) error {
	sum := sha256.Sum256(previous)
	data := map[string][]byte{backupHashKey: []byte(hex.EncodeToString(sum[:]))}
	if t.KeepPrevious == "value" {
		data[backupValueKey] = previous
	}
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        BackupSecretName(t.Name),
			Namespace:   t.Secret.Namespace,
			Labels:      map[string]string{labelManagedBy: labelManagedByName},
			Annotations: map[string]string{annotationTarget: t.Name, AnnotationRotationID: id},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	secrets := r.client.CoreV1().Secrets(t.Secret.Namespace)
	cur, err := secrets.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := secrets.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			err = r.perm.check(err, permission.Create, permission.Secrets, want.Namespace)
			return fmt.Errorf("remediation: create backup Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
		return nil
	case err != nil:
		err = r.perm.check(err, permission.Get, permission.Secrets, want.Namespace)
		return fmt.Errorf("remediation: read backup Secret %s/%s: %w", want.Namespace, want.Name, err)
	}
	if cur.Labels[labelManagedBy] != labelManagedByName {
		return fmt.Errorf("remediation: backup Secret %s/%s exists and is not managed by authwatch (label %s): rename or delete it",
			want.Namespace, want.Name, labelManagedBy)
	}
	want.ResourceVersion = cur.ResourceVersion
	if _, err := secrets.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
		err = r.perm.check(err, permission.Update, permission.Secrets, want.Namespace)
		return fmt.Errorf("remediation: update backup Secret %s/%s: %w", want.Namespace, want.Name, err)
	}
	return nil
}

// claim is the rotation state that the token patch writes besides the
// token.
type claim struct {
	id      string
	now     time.Time
	journal journal
	manual  bool
	renewal bool
}

// patchToken writes the token and the rotation state in one merge patch
// that carries the resourceVersion the Secret was read at. On a conflict
// it re-reads the Secret, checks that no other rotation or kill switch
// appeared meanwhile, and retries. Errors never contain the token.
func (r *Rotator) patchToken(ctx context.Context, t *Target, read *corev1.Secret, tok secret.Value, c claim) (*corev1.Secret, error) {
	secrets := r.client.CoreV1().Secrets(t.Secret.Namespace)
	cur := read
	for attempt := 1; ; attempt++ {
		if err := r.mayWrite(ctx); err != nil {
			return nil, err
		}
		body, err := tokenPatch(t, cur, tok, c)
		if err != nil {
			return nil, err
		}
		patched, err := secrets.Patch(ctx, t.Secret.Name, types.MergePatchType, body, metav1.PatchOptions{})
		if err == nil {
			return patched, nil
		}
		if !apierrors.IsConflict(err) {
			err = r.perm.check(err, permission.Patch, permission.Secrets, t.Secret.Namespace)
			return nil, fmt.Errorf("remediation: patch Secret %s/%s: %s", t.Secret.Namespace, t.Secret.Name, redact(err, tok))
		}
		if attempt >= maxPatchAttempts {
			return nil, fmt.Errorf("remediation: patch Secret %s/%s: still conflicting after %d attempts", t.Secret.Namespace, t.Secret.Name, attempt)
		}
		r.logger.Warn("secret patch conflict, re-reading", "target", t.Name, "rotation_id", c.id, "attempt", attempt)
		cur, err = secrets.Get(ctx, t.Secret.Name, metav1.GetOptions{})
		if err != nil {
			err = r.perm.check(err, permission.Get, permission.Secrets, t.Secret.Namespace)
			return nil, fmt.Errorf("remediation: re-read Secret %s/%s after a conflict: %w", t.Secret.Namespace, t.Secret.Name, err)
		}
		st := readState(cur)
		if st.disabled {
			return nil, &RejectedError{Target: t.Name, Reason: ReasonKillSwitch, Detail: "the kill switch was set while the rotation ran"}
		}
		if st.rotationID != "" && st.rotationID != read.Annotations[AnnotationRotationID] {
			return nil, &RejectedError{Target: t.Name, Reason: ReasonInFlight, Detail: fmt.Sprintf("rotation %s wrote the Secret meanwhile", st.rotationID)}
		}
	}
}

func tokenPatch(t *Target, cur *corev1.Secret, tok secret.Value, c claim) ([]byte, error) {
	st := readState(cur)
	lastHour := append(inHour(st.lastHour, c.now), c.now)
	history := append(st.history, c.now)
	if c.renewal {
		history = st.history
	}
	if c.manual {
		// An operator's rotation starts a fresh history for the breaker.
		history = []time.Time{c.now}
	}
	if len(history) > historyLength {
		history = history[len(history)-historyLength:]
	}
	j, err := json.Marshal(c.journal)
	if err != nil {
		return nil, err
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": cur.ResourceVersion,
			"annotations": map[string]string{
				AnnotationLastRotation:      c.now.UTC().Format(time.RFC3339),
				AnnotationRotationID:        c.id,
				AnnotationRotationsLastHour: formatTimes(lastHour),
				AnnotationHistory:           formatTimes(history),
				AnnotationJournal:           string(j),
			},
		},
		"data": map[string][]byte{t.Secret.Key: []byte(tok.Reveal())},
	}
	return json.Marshal(patch)
}

// writeJournal records a step in the Secret's journal annotation.
func (r *Rotator) writeJournal(ctx context.Context, t *Target, j journal) error {
	if err := r.mayWrite(ctx); err != nil {
		return err
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{AnnotationJournal: string(raw)}},
	})
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Secrets(t.Secret.Namespace).Patch(ctx, t.Secret.Name, types.MergePatchType, body, metav1.PatchOptions{})
	if err != nil {
		err = r.perm.check(err, permission.Patch, permission.Secrets, t.Secret.Namespace)
		return fmt.Errorf("remediation: write journal on Secret %s/%s: %w", t.Secret.Namespace, t.Secret.Name, err)
	}
	return nil
}

// redact returns err's message with every form of the token replaced.
// The result does not wrap err, so no caller can reach the original text.
func redact(err error, tok secret.Value) string {
	msg := err.Error()
	s := tok.Reveal()
	if s == "" {
		return msg
	}
	b, _ := json.Marshal([]byte(s)) // the base64 form that the patch carries
	for _, form := range []string{s, strings.Trim(string(b), `"`)} {
		msg = strings.ReplaceAll(msg, form, secret.Redacted)
	}
	return msg
}

var errLeaseLost = errors.New("remediation: this replica is no longer the leader")
