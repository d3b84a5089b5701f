package remediation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/internal/secret"
)

// maxResponseBytes bounds what a source reads from a response or a
// program's output.
const maxResponseBytes = 1 << 20

// ErrSource marks a failure to obtain a token from its source.
var ErrSource = errors.New("remediation: token source failed")

// TokenSource obtains a new token. Errors never contain the token or
// the credentials.
type TokenSource interface {
	Token(ctx context.Context) (secret.Value, error)
	// Describe returns a one-line description for plans and reports.
	Describe() string
}

// PodExecutor runs a command in a container, as `kubectl exec` does.
type PodExecutor interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string, stdout, stderr io.Writer) error
}

type httpSource struct {
	cfg    HTTPSource
	ns     string
	client kubernetes.Interface
	perm   permissions
	http   *http.Client
}

func newHTTPSource(cfg HTTPSource, namespace string, client kubernetes.Interface) (*httpSource, error) {
	tlsConfig := &tls.Config{
		ServerName:         cfg.TLS.ServerName,
		InsecureSkipVerify: cfg.TLS.InsecureSkipVerify, //nolint:gosec // opt-in for test issuers, named in the config
		MinVersion:         tls.VersionTLS12,
	}
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("remediation: read tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("remediation: tls.ca_file %s contains no PEM certificate: give a PEM-encoded CA bundle", cfg.TLS.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &httpSource{
		cfg:    cfg,
		ns:     namespace,
		client: client,
		http:   &http.Client{Transport: transport, Timeout: cfg.Timeout},
	}, nil
}

func (s *httpSource) Describe() string {
	return fmt.Sprintf("http %s %s, token from response field %q", s.cfg.Method, redactURL(s.cfg.URL), s.cfg.TokenPath)
}

func (s *httpSource) Token(ctx context.Context) (secret.Value, error) {
	fields, err := s.credentials(ctx)
	if err != nil {
		return secret.Value{}, err
	}

	var body io.Reader
	contentType := ""
	if len(fields) > 0 && s.cfg.Method != http.MethodGet {
		if s.cfg.BodyFormat == "form" {
			form := url.Values{}
			for k, v := range fields {
				form.Set(k, v.Reveal())
			}
			body = strings.NewReader(form.Encode())
			contentType = "application/x-www-form-urlencoded"
		} else {
			plain := make(map[string]string, len(fields))
			for k, v := range fields {
				plain[k] = v.Reveal()
			}
			b, err := json.Marshal(plain)
			if err != nil {
				return secret.Value{}, fmt.Errorf("%w: encode request body: %v", ErrSource, err)
			}
			body = bytes.NewReader(b)
			contentType = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, s.cfg.Method, s.cfg.URL, body)
	if err != nil {
		return secret.Value{}, fmt.Errorf("%w: build request for %s: %v", ErrSource, redactURL(s.cfg.URL), err)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}

	resp, err := s.http.Do(req)
	if err != nil {
		// A url.Error repeats the URL, which Validate keeps free of
		// credentials; its cause names the network failure.
		return secret.Value{}, fmt.Errorf("%w: %s %s: %v", ErrSource, s.cfg.Method, redactURL(s.cfg.URL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return secret.Value{}, fmt.Errorf("%w: read response from %s: %v", ErrSource, redactURL(s.cfg.URL), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The body is left out: an issuer may echo what it was sent.
		return secret.Value{}, fmt.Errorf("%w: %s %s returned HTTP %d", ErrSource, s.cfg.Method, redactURL(s.cfg.URL), resp.StatusCode)
	}
	if len(raw) > maxResponseBytes {
		return secret.Value{}, fmt.Errorf("%w: response from %s is larger than %d bytes", ErrSource, redactURL(s.cfg.URL), maxResponseBytes)
	}
	return pickJSONToken(raw, s.cfg.TokenPath)
}

// credentials returns the body fields from the credentials Secret or file.
func (s *httpSource) credentials(ctx context.Context) (map[string]secret.Value, error) {
	fields := map[string]secret.Value{}
	switch {
	case s.cfg.CredentialsSecret != "":
		sec, err := s.client.CoreV1().Secrets(s.ns).Get(ctx, s.cfg.CredentialsSecret, metav1.GetOptions{})
		if err != nil {
			err = s.perm.check(err, permission.Get, permission.Secrets, s.ns)
			return nil, fmt.Errorf("%w: read credentials Secret %s/%s: %v", ErrSource, s.ns, s.cfg.CredentialsSecret, err)
		}
		for k, v := range sec.Data {
			fields[k] = secret.New(string(v))
		}
		for k, v := range sec.StringData {
			fields[k] = secret.New(v)
		}
	case s.cfg.CredentialsFile != "":
		raw, err := os.ReadFile(s.cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("%w: read credentials_file: %v", ErrSource, err)
		}
		var plain map[string]string
		if err := json.Unmarshal(raw, &plain); err != nil {
			return nil, fmt.Errorf("%w: credentials_file %s is not a JSON object of strings", ErrSource, s.cfg.CredentialsFile)
		}
		for k, v := range plain {
			fields[k] = secret.New(v)
		}
	}
	return fields, nil
}

// pickJSONToken returns the string at a dot-separated path of a JSON
// document. Its errors name the path and the JSON type found, never a value.
func pickJSONToken(raw []byte, path string) (secret.Value, error) {
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return secret.Value{}, fmt.Errorf("%w: response is not JSON", ErrSource)
	}
	cur := doc
	for _, key := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return secret.Value{}, fmt.Errorf("%w: token_path %q: %s is not inside a JSON object", ErrSource, path, key)
		}
		cur, ok = obj[key]
		if !ok {
			return secret.Value{}, fmt.Errorf("%w: token_path %q: field %s not found in the response", ErrSource, path, key)
		}
	}
	tok, ok := cur.(string)
	if !ok {
		return secret.Value{}, fmt.Errorf("%w: token_path %q: found a JSON %s, expected a string", ErrSource, path, jsonType(cur))
	}
	return secret.New(tok), nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "value"
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.RawQuery = ""
	u.Fragment = ""
	return u.Redacted()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

type execSource struct {
	cfg     ExecSource
	pattern *regexp.Regexp
	client  kubernetes.Interface
	perm    permissions
	exec    PodExecutor
}

func (s *execSource) Describe() string {
	return fmt.Sprintf("exec %q in a ready pod of %s matching %s, token from the output by pattern",
		strings.Join(s.cfg.Command, " "), s.cfg.Namespace, s.cfg.Selector)
}

func (s *execSource) Token(ctx context.Context) (secret.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	pod, err := s.pickPod(ctx)
	if err != nil {
		return secret.Value{}, err
	}
	var stdout, stderr limitedBuffer
	if err := s.exec.Exec(ctx, s.cfg.Namespace, pod, s.cfg.Container, s.cfg.Command, &stdout, &stderr); err != nil {
		err = s.perm.check(err, permission.Create, permission.PodExec, s.cfg.Namespace)
		// stderr is left out: a command that prints the token on failure
		// would leak it.
		return secret.Value{}, fmt.Errorf("%w: exec in pod %s/%s: %v", ErrSource, s.cfg.Namespace, pod, err)
	}
	m := s.pattern.FindSubmatch(stdout.Bytes())
	if m == nil {
		return secret.Value{}, fmt.Errorf("%w: output of exec in pod %s/%s (%d bytes) does not match token_pattern",
			ErrSource, s.cfg.Namespace, pod, stdout.Len())
	}
	if len(m) > 1 {
		return secret.New(string(m[1])), nil
	}
	return secret.New(string(m[0])), nil
}

// pickPod returns the first pod, by name, that is running, ready and not
// being deleted.
func (s *execSource) pickPod(ctx context.Context) (string, error) {
	pods, err := s.client.CoreV1().Pods(s.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.cfg.Selector})
	if err != nil {
		err = s.perm.check(err, permission.List, permission.Pods, s.cfg.Namespace)
		return "", fmt.Errorf("%w: list pods in %s matching %s: %v", ErrSource, s.cfg.Namespace, s.cfg.Selector, err)
	}
	var ready []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) {
			ready = append(ready, p.Name)
		}
	}
	if len(ready) == 0 {
		return "", fmt.Errorf("%w: no running, ready pod in %s matches %s (%d found)",
			ErrSource, s.cfg.Namespace, s.cfg.Selector, len(pods.Items))
	}
	slices.Sort(ready)
	return ready[0], nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

type commandSource struct {
	cfg CommandSource
}

func (s *commandSource) Describe() string {
	return fmt.Sprintf("command %s, token from standard output", s.cfg.Command[0])
}

func (s *commandSource) Token(ctx context.Context) (secret.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	var stdout limitedBuffer
	cmd := exec.CommandContext(ctx, s.cfg.Command[0], s.cfg.Command[1:]...)
	cmd.Stdout = &stdout
	cmd.Stderr = io.Discard // may repeat the token; never reported
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return secret.Value{}, fmt.Errorf("%w: command %s: timed out after %s", ErrSource, s.cfg.Command[0], s.cfg.Timeout)
		}
		return secret.Value{}, fmt.Errorf("%w: command %s: %v", ErrSource, s.cfg.Command[0], err)
	}
	if stdout.overflow {
		return secret.Value{}, fmt.Errorf("%w: command %s wrote more than %d bytes", ErrSource, s.cfg.Command[0], maxResponseBytes)
	}
	return secret.New(strings.TrimSpace(stdout.String())), nil
}

// limitedBuffer keeps the first maxResponseBytes written to it and
// discards the rest.
type limitedBuffer struct {
	bytes.Buffer
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := maxResponseBytes - b.Len()
	if len(p) > room {
		b.overflow = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
