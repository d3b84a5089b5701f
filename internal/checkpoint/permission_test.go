package checkpoint

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/authwatch/authwatch/internal/kubetest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestForbiddenWriteReported(t *testing.T) {
	srv, err := kubetest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	client, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	s, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg, Client: client,
		Namespace: "authwatch", Name: "authwatch-checkpoint",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Deny("create", "configmaps")
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	state := "v1"
	s.Register("watch", func() ([]byte, error) { return []byte(state), nil })

	for i := range 3 {
		state = strings.Repeat("v", i+2)
		err := s.Flush(t.Context())
		if !apierrors.IsForbidden(err) {
			t.Fatalf("Flush %d with create forbidden = %v, want a 403", i, err)
		}
	}
	want := `
# HELP authwatch_api_permission_errors_total Kubernetes API requests rejected with 403 Forbidden, by verb and resource; the ServiceAccount lacks an RBAC rule.
# TYPE authwatch_api_permission_errors_total counter
authwatch_api_permission_errors_total{resource="configmaps",verb="create"} 3
authwatch_api_permission_errors_total{resource="configmaps",verb="get"} 0
authwatch_api_permission_errors_total{resource="configmaps",verb="update"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "authwatch_api_permission_errors_total"); err != nil {
		t.Error(err)
	}
	if got := strings.Count(logs.String(), "permission denied by the API server"); got != 1 {
		t.Errorf("%d permission log records for 3 rejected writes, want 1:\n%s", got, logs.String())
	}
	for _, want := range []string{
		"verb=create resource=configmaps namespace=authwatch",
		`fix="grant create on configmaps in namespace \"authwatch\"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}

	srv.Allow("create", "configmaps")
	if err := s.Flush(t.Context()); err != nil {
		t.Fatalf("Flush after create is allowed: %v", err)
	}
	if cm := srv.ConfigMap("authwatch", "authwatch-checkpoint"); cm == nil || string(cm.BinaryData["watch"]) != state {
		t.Errorf("ConfigMap after create is allowed = %v, want section watch = %q", cm, state)
	}
}
