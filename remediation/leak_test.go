package remediation

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestNoTokenLeaks runs rotations that succeed and fail in every way that
// could carry the token, then searches the logs, Events, reports, metrics
// and errors for it, raw and base64-encoded.
func TestNoTokenLeaks(t *testing.T) {
	scenarios := []struct {
		name  string
		setup func(t *testing.T, h *harness, newToken string)
	}{
		{name: "success", setup: func(t *testing.T, h *harness, _ string) { fakeController(t, h.cs, false) }},
		{name: "api error echoes the patch", setup: func(t *testing.T, h *harness, newToken string) {
			h.cs.PrependReactor("patch", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				body := string(a.(k8stesting.PatchAction).GetPatch())
				return true, nil, apierrors.NewBadRequest("invalid patch: " + body)
			})
		}},
		{name: "source error", setup: func(_ *testing.T, h *harness, newToken string) {
			h.source.err = fmt.Errorf("%w: exec failed", ErrSource)
		}},
		{name: "token too short-lived", setup: func(_ *testing.T, h *harness, newToken string) {}},
		{name: "dry run", setup: func(_ *testing.T, h *harness, _ string) {}},
		{name: "not verified", setup: func(t *testing.T, h *harness, _ string) { fakeController(t, h.cs, true) }},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				oldToken := makeJWT(time.Now().Add(-time.Minute), "OLDSECRETMARKER")
				newToken := makeJWT(time.Now().Add(time.Hour), "NEWSECRETMARKER")
				if sc.name == "token too short-lived" {
					newToken = makeJWT(time.Now().Add(10*time.Second), "NEWSECRETMARKER")
				}
				target := testTargetConfig()
				if sc.name == "dry run" {
					target.DryRun = nil
				}
				h := newHarness(t, target, testSecretObject(oldToken, nil), testDeployment())
				h.source.token = newToken
				sc.setup(t, h, newToken)

				res := h.rot.Rotate(t.Context(), manual())
				var errText string
				if res.Err != nil {
					errText = res.Err.Error() + fmt.Sprintf(" %+v %#v", res.Err, res.Err)
					for e := errors.Unwrap(res.Err); e != nil; e = errors.Unwrap(e) {
						errText += " " + e.Error()
					}
				}
				metricsText := gatherText(t, h)
				var eventText strings.Builder
				for _, e := range events(t, h.cs) {
					fmt.Fprintf(&eventText, "%s %s %v\n", e.Reason, e.Message, e.Annotations)
				}
				places := map[string]string{
					"logs":    h.logs.String(),
					"events":  eventText.String(),
					"reports": h.reporter.text(),
					"metrics": metricsText,
					"errors":  errText,
					"result":  fmt.Sprintf("%+v", res),
				}
				for _, tok := range []string{oldToken, newToken} {
					forms := []string{tok, base64.StdEncoding.EncodeToString([]byte(tok)), strings.Split(tok, ".")[1], strings.Split(tok, ".")[2]}
					for place, text := range places {
						for _, f := range forms {
							if strings.Contains(text, f) {
								t.Errorf("%s contain a form of a token (outcome %s)", place, res.Outcome)
							}
						}
					}
				}
				if h.logs.Len() == 0 || h.reporter.text() == "" {
					t.Fatal("nothing was logged or reported; the test would pass vacuously")
				}
			})
		})
	}
}

func gatherText(t *testing.T, h *harness) string {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		b.WriteString(f.String())
	}
	return b.String()
}

func TestMetricsLint(t *testing.T) {
	h := newHarness(t, testTargetConfig(), testSecretObject("x", nil))
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestHTTPSourceErrorsNeverEchoBody checks that an issuer that returns
// an error page that repeats the request does not leak the credentials.
func TestHTTPSourceErrorsNeverEchoBody(t *testing.T) {
	srv := issuer(t, func(w http.ResponseWriter, f map[string]string) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"password":[%q]}`, f["password"])
	})
	src, err := newHTTPSource(HTTPSource{URL: srv.URL, Method: "POST", BodyFormat: "json", CredentialsSecret: "login", TokenPath: "access", Timeout: time.Second},
		testNS, fake.NewClientset(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "login", Namespace: testNS},
			Data:       map[string][]byte{"username": []byte("u"), "password": []byte("SECRETPASSWORD")},
		}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Token(t.Context())
	if err == nil || strings.Contains(err.Error(), "SECRETPASSWORD") {
		t.Errorf("err = %v, want an error without the password", err)
	}
}
