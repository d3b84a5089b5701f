package remediation

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/internal/secret"
)

const (
	testNS     = "town-builder"
	testSecret = "town-builder-secrets"
	testKey    = "TOWN_API_JWT_TOKEN"
	testTarget = "town-builder-api-token"
)

var (
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	replicaSetsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
)

// makeJWT returns an unsigned JWT whose exp is exp.
func makeJWT(exp time.Time, marker string) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{"exp": exp.Unix(), "jti": marker})
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString([]byte("sig-"+marker))
}

func testTargetConfig() Target {
	dry := false
	return Target{
		Name:           testTarget,
		On:             []string{"token-expired"},
		Secret:         SecretRef{Namespace: testNS, Name: testSecret, Key: testKey},
		Restart:        []WorkloadRef{{Kind: "Deployment", Name: "town-builder"}},
		Source:         Source{Command: &CommandSource{Command: []string{"/bin/false"}}},
		DryRun:         &dry,
		RolloutTimeout: time.Minute,
		VerifyWindow:   30 * time.Second,
	}
}

func testSecretObject(token string, annotations map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS, UID: "secret-uid", ResourceVersion: "10", Annotations: annotations},
		Data:       map[string][]byte{testKey: []byte(token)},
	}
}

func testDeployment() *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "town-builder", Namespace: testNS, UID: "deploy-uid"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "town-builder"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "town-builder"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "client",
					Env: []corev1.EnvVar{{Name: testKey, ValueFrom: &corev1.EnvVarSource{
						SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: testSecret}, Key: testKey},
					}}},
				}}},
			},
		},
	}
}

// fakeController plays the Deployment controller in the fake clientset:
// once the pod template carries a restartedAt annotation, a read of the
// Deployment finds the new ReplicaSet and, unless stuck, a complete
// rollout.
func fakeController(t *testing.T, cs *fake.Clientset, stuck bool) {
	t.Helper()
	cs.PrependReactor("get", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		get := a.(k8stesting.GetAction)
		obj, err := cs.Tracker().Get(deploymentsGVR, get.GetNamespace(), get.GetName())
		if err != nil {
			return false, nil, nil
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		at := d.Spec.Template.Annotations[AnnotationRestartedAt]
		if at == "" {
			return false, nil, nil
		}
		h := fnv.New32a()
		_, _ = h.Write([]byte(at))
		rsName := fmt.Sprintf("%s-%x", d.Name, h.Sum32())
		if _, err := cs.Tracker().Get(replicaSetsGVR, d.Namespace, rsName); err != nil {
			rs := &appsv1.ReplicaSet{
				ObjectMeta: metav1.ObjectMeta{
					Name: rsName, Namespace: d.Namespace, Labels: d.Spec.Template.Labels,
					OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
				},
				Spec: appsv1.ReplicaSetSpec{Template: d.Spec.Template},
			}
			if err := cs.Tracker().Create(replicaSetsGVR, rs, d.Namespace); err != nil {
				return true, nil, err
			}
		}
		if stuck {
			d.Status = appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 1, AvailableReplicas: 1}
		} else {
			d.Status = appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
		}
		if err := cs.Tracker().Update(deploymentsGVR, d, d.Namespace); err != nil {
			return true, nil, err
		}
		return false, nil, nil
	})
}

// newReplicaSetName returns the name of the ReplicaSet that fakeController
// created, or "".
func newReplicaSetName(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	list, err := cs.Tracker().List(replicaSetsGVR, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), testNS)
	if err != nil {
		t.Fatal(err)
	}
	items := list.(*appsv1.ReplicaSetList).Items
	if len(items) != 1 {
		t.Fatalf("%d ReplicaSets, want 1", len(items))
	}
	return items[0].Name
}

// staticSource returns a fixed token, or an error.
type staticSource struct {
	token string
	err   error
	calls atomic.Int32
}

func (s *staticSource) Token(context.Context) (secret.Value, error) {
	s.calls.Add(1)
	if s.err != nil {
		return secret.Value{}, s.err
	}
	return secret.New(s.token), nil
}

func (s *staticSource) Describe() string { return "static test source" }

// recordingReporter keeps every report.
type recordingReporter struct {
	mu      sync.Mutex
	reports []Report
}

func (r *recordingReporter) Report(_ context.Context, rep Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
	return nil
}

func (r *recordingReporter) final(t *testing.T) Report {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rep := range r.reports {
		if rep.Final {
			return rep
		}
	}
	t.Fatal("no final report")
	return Report{}
}

func (r *recordingReporter) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rep := range r.reports {
		fmt.Fprintf(&b, "%+v\n", rep)
		b.WriteString(rep.Message + "\n")
	}
	return b.String()
}

// switchLeader is a LeaderChecker that a test flips.
type switchLeader struct{ lost atomic.Bool }

func (l *switchLeader) IsLeader() bool { return !l.lost.Load() }

type harness struct {
	cs       *fake.Clientset
	rot      *Rotator
	reporter *recordingReporter
	reg      *prometheus.Registry
	logs     *bytes.Buffer
	source   *staticSource
	leader   *switchLeader
}

// newHarness builds a Rotator over a fake clientset holding the Secret
// and the Deployment, with a static token source.
func newHarness(t *testing.T, target Target, objects ...runtime.Object) *harness {
	t.Helper()
	cs := fake.NewClientset(objects...)
	h := &harness{
		cs:       cs,
		reporter: &recordingReporter{},
		reg:      prometheus.NewRegistry(),
		logs:     &bytes.Buffer{},
		source:   &staticSource{},
		leader:   &switchLeader{},
	}
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	perm, err := permission.New(permission.Options{Logger: logger, Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := New(Options{
		Config:       Config{Targets: []Target{target}},
		Client:       cs,
		Permissions:  perm,
		Reporter:     h.reporter,
		Leader:       h.leader,
		Logger:       logger,
		Registerer:   h.reg,
		Identity:     "authwatch-0",
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rot.SetSource(target.Name, h.source); err != nil {
		t.Fatal(err)
	}
	h.rot = rot
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// writes returns the write actions recorded by the fake clientset, as
// "verb resource/subresource name", leaving out Event creation.
func writes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		verb := a.GetVerb()
		if verb == "get" || verb == "list" || verb == "watch" {
			continue
		}
		if a.GetResource().Resource == "events" {
			continue
		}
		name := ""
		switch a := a.(type) {
		case k8stesting.PatchAction:
			name = a.GetName()
		case k8stesting.CreateAction:
			if o, ok := a.GetObject().(metav1.Object); ok {
				name = o.GetName()
			}
		case k8stesting.UpdateAction:
			if o, ok := a.GetObject().(metav1.Object); ok {
				name = o.GetName()
			}
		}
		out = append(out, verb+" "+a.GetResource().Resource+" "+name)
	}
	return out
}

func events(t *testing.T, cs *fake.Clientset) []corev1.Event {
	t.Helper()
	list, err := cs.CoreV1().Events(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func getSecret(t *testing.T, cs *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(testNS).Get(context.Background(), testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
