// Package kubetest is a scriptable stand-in for the parts of the
// Kubernetes API server that the watcher uses. It lists and watches pods
// (with label and field selectors, resource versions, bookmarks and
// streaming lists), serves pods/log with the kubelet's semantics (follow,
// timestamps, sinceTime, previous), and stores ConfigMaps. It serves HTTP/2 over
// TLS so that real client-go talks to it as to a real server, and injects
// faults on request: clean ends, resets, stalls, kubelet error text and
// HTTP/2 GOAWAY. It is for tests and benchmarks only.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// Server is the stand-in API server. Its methods are safe for concurrent
// use.
type Server struct {
	addr    string
	tlsCfg  *tls.Config
	certPEM []byte

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	rv       int64                        // guarded by mu; the latest resource version
	pods     map[string]*corev1.Pod       // guarded by mu; by namespace/name
	events   []podEvent                   // guarded by mu; every pod change, in order
	changed  chan struct{}                // guarded by mu; closed and replaced on each change
	logs     map[string]*Log              // guarded by mu; by container ID
	cms      map[string]*corev1.ConfigMap // guarded by mu; by namespace/name
	fault    LogFaultFunc                 // guarded by mu
	denied   map[string]bool              // guarded by mu; "verb resource" pairs rejected with 403
	gen      chan struct{}                // guarded by mu; closed by GoAway to end open streams
	stats    Stats                        // guarded by mu
	logReqs  map[string]int               // guarded by mu; log requests per container ID
	conns    map[net.Conn]struct{}        // guarded by mu; open client connections
	closed   bool                         // guarded by mu
	serveErr chan error
}

// Stats counts requests by kind.
type Stats struct {
	LogRequests   int
	WatchRequests int
	ListRequests  int
	OpenLogs      int // log requests being served now
}

type podEvent struct {
	rv       int64
	typ      string
	old, obj *corev1.Pod // old is nil for ADDED
}

// Start serves on 127.0.0.1 on a free port until Close.
func Start() (*Server, error) {
	cert, certPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("kubetest: listen: %w", err)
	}
	s := &Server{
		addr:    ln.Addr().String(),
		tlsCfg:  &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12},
		certPEM: certPEM,
		pods:    map[string]*corev1.Pod{},
		logs:    map[string]*Log{},
		cms:     map[string]*corev1.ConfigMap{},
		logReqs: map[string]int{},
		denied:  map[string]bool{},
		conns:   map[net.Conn]struct{}{},
		changed: make(chan struct{}),
		gen:     make(chan struct{}),
		rv:      100,
	}
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.route), TLSConfig: s.tlsCfg.Clone(), ReadHeaderTimeout: 10 * time.Second}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.conns[c] = struct{}{}
		case http.StateClosed, http.StateHijacked:
			delete(s.conns, c)
		}
	}
	s.srv, s.ln = srv, ln
	go func() { _ = srv.ServeTLS(ln, "", "") }()
}

// Addr returns the host:port served.
func (s *Server) Addr() string { return s.addr }

// RESTConfig returns a client configuration that trusts the server.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            "https://" + s.addr,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.certPEM},
		QPS:             1000,
		Burst:           1000,
	}
}

// Kubeconfig returns a kubeconfig file's content for the server.
func (s *Server) Kubeconfig(namespace string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: https://%s
    certificate-authority-data: %s
users:
- name: standin
  user: {token: standin}
contexts:
- name: standin
  context: {cluster: standin, user: standin, namespace: %s}
current-context: standin
`, s.addr, base64Std(s.certPEM), namespace)
}

// Close stops serving and ends every open stream.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	srv := s.srv
	close(s.gen)
	for _, l := range s.logs {
		l.Close()
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
}

// GoAway sends HTTP/2 GOAWAY on every connection, as an API server does
// when it shuts down gracefully, ends the open watches and log streams
// cleanly, and serves new connections on the same address.
func (s *Server) GoAway() error {
	s.mu.Lock()
	old, oldLn := s.srv, s.ln
	close(s.gen)
	s.gen = make(chan struct{})
	s.mu.Unlock()
	_ = oldLn.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = old.Shutdown(ctx)
	}()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("kubetest: listen again on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.serve(ln)
	s.mu.Unlock()
	<-done
	return nil
}

// DropConnections closes every client connection at the TCP level, with
// no GOAWAY, as a crashed API server or a broken network path would.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// Stats returns the request counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// AddPod creates pod, or replaces the pod with its namespace and name.
func (s *Server) AddPod(pod *corev1.Pod) { s.putPod(pod.DeepCopy()) }

// UpdatePod replaces the stored pod with the same namespace and name.
func (s *Server) UpdatePod(pod *corev1.Pod) { s.putPod(pod.DeepCopy()) }

func (s *Server) putPod(pod *corev1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := pod.Namespace + "/" + pod.Name
	s.rv++
	pod.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	pod.ResourceVersion = strconv.FormatInt(s.rv, 10)
	old := s.pods[key]
	typ := "MODIFIED"
	if old == nil {
		typ = "ADDED"
	}
	s.pods[key] = pod
	s.events = append(s.events, podEvent{rv: s.rv, typ: typ, old: old, obj: pod})
	s.notifyLocked()
}

// Pod returns a copy of the stored pod, or nil.
func (s *Server) Pod(namespace, name string) *corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pods[namespace+"/"+name]; p != nil {
		return p.DeepCopy()
	}
	return nil
}

// DeletePod removes a pod; its logs stay readable until ForgetLog.
func (s *Server) DeletePod(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := namespace + "/" + name
	old := s.pods[key]
	if old == nil {
		return
	}
	delete(s.pods, key)
	s.rv++
	gone := old.DeepCopy()
	gone.ResourceVersion = strconv.FormatInt(s.rv, 10)
	s.events = append(s.events, podEvent{rv: s.rv, typ: "DELETED", old: old, obj: gone})
	s.notifyLocked()
}

// ConfigMap returns a copy of a stored ConfigMap, or nil.
func (s *Server) ConfigMap(namespace, name string) *corev1.ConfigMap {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cm := s.cms[namespace+"/"+name]; cm != nil {
		return cm.DeepCopy()
	}
	return nil
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// /api/v1/pods, /api/v1/namespaces/NS/pods[/NAME[/log]], .../configmaps[/NAME]
	if len(parts) < 3 || parts[0] != "api" || parts[1] != "v1" {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	parts = parts[2:]
	ns := ""
	if parts[0] == "namespaces" && len(parts) >= 3 {
		ns, parts = parts[1], parts[2:]
	}
	if verb, resource := access(r, parts); s.isDenied(verb, resource) {
		msg := fmt.Sprintf(`%s is forbidden: User "system:serviceaccount:test:authwatch" cannot %s resource %q in API group "" in the namespace %q`,
			resource, verb, resource, ns)
		writeStatus(w, http.StatusForbidden, string(metav1.StatusReasonForbidden), msg)
		return
	}
	switch {
	case parts[0] == "pods" && len(parts) == 1 && r.Method == http.MethodGet:
		if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
			s.watchPods(w, r, ns)
			return
		}
		s.listPods(w, r, ns)
	case parts[0] == "pods" && len(parts) == 3 && parts[2] == "log" && r.Method == http.MethodGet:
		s.podLog(w, r, ns, parts[1])
	case parts[0] == "pods" && len(parts) == 2 && r.Method == http.MethodGet:
		if p := s.Pod(ns, parts[1]); p != nil {
			writeJSON(w, http.StatusOK, p)
			return
		}
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", parts[1]))
	case parts[0] == "configmaps":
		s.configMaps(w, r, ns, parts[1:])
	default:
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
	}
}

// Deny makes the server reject requests for verb on resource (such as
// "get" and "pods/log", or "list" and "pods") with 403 Forbidden, as the
// API server does when RBAC allows no such request. Allow undoes it.
func (s *Server) Deny(verb, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[verb+" "+resource] = true
}

// Allow undoes Deny.
func (s *Server) Allow(verb, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.denied, verb+" "+resource)
}

func (s *Server) isDenied(verb, resource string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied[verb+" "+resource]
}

// access returns the RBAC verb and resource of a request; parts is the
// path after /api/v1 and the namespace.
func access(r *http.Request, parts []string) (verb, resource string) {
	resource = parts[0]
	if len(parts) == 3 {
		resource += "/" + parts[2]
	}
	q := r.URL.Query().Get("watch")
	switch {
	case r.Method == http.MethodPost:
		return "create", resource
	case r.Method == http.MethodPut:
		return "update", resource
	case r.Method == http.MethodPatch:
		return "patch", resource
	case len(parts) >= 2:
		return "get", resource
	case q == "true" || q == "1":
		return "watch", resource
	}
	return "list", resource
}

type podFilter struct {
	ns     string
	labels labels.Selector
	fields fields.Selector
}

func newPodFilter(r *http.Request, ns string) (podFilter, error) {
	ls, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		return podFilter{}, err
	}
	fs, err := fields.ParseSelector(r.URL.Query().Get("fieldSelector"))
	if err != nil {
		return podFilter{}, err
	}
	return podFilter{ns: ns, labels: ls, fields: fs}, nil
}

func (f podFilter) match(p *corev1.Pod) bool {
	if p == nil || (f.ns != "" && p.Namespace != f.ns) {
		return false
	}
	set := fields.Set{
		"metadata.name": p.Name, "metadata.namespace": p.Namespace,
		"spec.nodeName": p.Spec.NodeName, "status.phase": string(p.Status.Phase),
	}
	return f.labels.Matches(labels.Set(p.Labels)) && f.fields.Matches(set)
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request, ns string) {
	f, err := newPodFilter(r, ns)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	s.mu.Lock()
	s.stats.ListRequests++
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	list.ResourceVersion = strconv.FormatInt(s.rv, 10)
	for _, p := range s.pods {
		if f.match(p) {
			list.Items = append(list.Items, *p)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, &list)
}

type watchEvent struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

func (s *Server) watchPods(w http.ResponseWriter, r *http.Request, ns string) {
	f, err := newPodFilter(r, ns)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	s.stats.WatchRequests++
	gen := s.gen
	var from int64
	var initial []*corev1.Pod
	initialRV := s.rv
	if q.Get("sendInitialEvents") == "true" {
		for _, p := range s.pods {
			if f.match(p) {
				initial = append(initial, p)
			}
		}
		from = s.rv
	} else {
		from, _ = strconv.ParseInt(q.Get("resourceVersion"), 10, 64)
		if from == 0 {
			from = s.rv
		}
		if len(s.events) > 0 && from < s.events[0].rv-1 {
			s.mu.Unlock()
			writeStatus(w, http.StatusGone, "Expired", "too old resource version")
			return
		}
	}
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	for _, p := range initial {
		if enc.Encode(watchEvent{Type: "ADDED", Object: p}) != nil {
			return
		}
	}
	if q.Get("sendInitialEvents") == "true" {
		bm := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}}
		bm.ResourceVersion = strconv.FormatInt(initialRV, 10)
		bm.Annotations = map[string]string{"k8s.io/initial-events-end": "true"}
		if enc.Encode(watchEvent{Type: "BOOKMARK", Object: bm}) != nil {
			return
		}
	}
	flush()
	timeout := time.Hour
	if ts, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && ts > 0 {
		timeout = time.Duration(ts) * time.Second
	}
	end := time.NewTimer(timeout)
	defer end.Stop()
	for {
		s.mu.Lock()
		var batch []podEvent
		for _, e := range s.events {
			if e.rv > from {
				batch = append(batch, e)
			}
		}
		changed := s.changed
		s.mu.Unlock()
		for _, e := range batch {
			from = e.rv
			oldIn, newIn := f.match(e.old), f.match(e.obj)
			typ := e.typ
			switch {
			case e.typ == "DELETED":
				if !oldIn {
					continue
				}
			case oldIn && newIn:
			case newIn:
				typ = "ADDED"
			case oldIn:
				typ = "DELETED"
			default:
				continue
			}
			if enc.Encode(watchEvent{Type: typ, Object: e.obj}) != nil {
				return
			}
		}
		flush()
		select {
		case <-r.Context().Done():
			return
		case <-gen:
			return
		case <-end.C:
			return
		case <-changed:
		}
	}
}

func (s *Server) configMaps(w http.ResponseWriter, r *http.Request, ns string, rest []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && len(rest) == 1:
		cm := s.cms[ns+"/"+rest[0]]
		if cm == nil {
			writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("configmaps %q not found", rest[0]))
			return
		}
		writeJSON(w, http.StatusOK, cm)
	case r.Method == http.MethodPost && len(rest) == 0, r.Method == http.MethodPut && len(rest) == 1:
		// client-go sends protobuf or JSON.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		in, ok := obj.(*corev1.ConfigMap)
		if err != nil || !ok {
			writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("not a ConfigMap: %v", err))
			return
		}
		cm := *in
		key := ns + "/" + cm.Name
		cur := s.cms[key]
		if r.Method == http.MethodPost && cur != nil {
			writeStatus(w, http.StatusConflict, "AlreadyExists", fmt.Sprintf("configmaps %q already exists", cm.Name))
			return
		}
		if r.Method == http.MethodPut {
			if cur == nil {
				writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("configmaps %q not found", cm.Name))
				return
			}
			if cm.ResourceVersion != "" && cm.ResourceVersion != cur.ResourceVersion {
				writeStatus(w, http.StatusConflict, "Conflict", "the object has been modified")
				return
			}
		}
		s.rv++
		cm.Namespace = ns
		cm.TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
		cm.ResourceVersion = strconv.FormatInt(s.rv, 10)
		s.cms[key] = &cm
		code := http.StatusOK
		if r.Method == http.MethodPost {
			code = http.StatusCreated
		}
		writeJSON(w, code, &cm)
	default:
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not supported here")
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(reason), Code: int32(code),
	})
}

func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubetest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, errors.Join(errors.New("kubetest: certificate"), err)
	}
	return cert, certPEM, nil
}

func (s *Server) countLogRequest(id string) int {
	s.logReqs[id]++
	return s.logReqs[id]
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
