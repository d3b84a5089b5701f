// Package nodeagent is the end-to-end tests' stand-in for a kubelet and a
// scheduler. It registers Nodes that report 127.0.0.1 and its port, keeps
// them Ready, binds pending pods to them, runs each container as a scripted
// program or a local process, reports pod and container status, and serves
// the kubelet endpoints the API server proxies pods/log and pods/exec to.
// Fault hooks restart containers, rotate their logs and cut or stall their
// log streams. Container images select the runtime; see Runtime and
// docs/testing.md.
package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Options configure an Agent.
type Options struct {
	// Client acts as the agent's identity: it registers Nodes, binds pods,
	// writes pod status and reads the Secrets and ConfigMaps pods use.
	Client kubernetes.Interface
	// Nodes are the names of the Nodes the agent registers and schedules
	// pods to, in turn. Empty means one node, "node-1".
	Nodes []string
	// Listener receives the API server's kubelet requests; the agent serves
	// TLS on it with ServingCert and closes it when Run returns.
	Listener    net.Listener
	ServingCert tls.Certificate
	// ClientCAs, when set, makes the agent require a client certificate
	// signed by one of them, as a kubelet does of the API server.
	ClientCAs *x509.CertPool
	Logger    *slog.Logger
	// RestartDelay is the pause before a container restarts after it
	// exits. Zero means 1s; a real kubelet backs off from 10s.
	RestartDelay time.Duration
	// HTTPClient makes the requests of the "auth" script step; nil means a
	// client with a 5s timeout.
	HTTPClient *http.Client
	// VolumeSyncPeriod is how often Secret and ConfigMap volume files are
	// rewritten from the API. Zero means 2s; a kubelet takes up to about
	// a minute plus its cache TTL.
	VolumeSyncPeriod time.Duration
}

// Agent runs pods for its Nodes. Create it with New and start it with Run.
type Agent struct {
	opts   Options
	client kubernetes.Interface
	log    *slog.Logger
	port   int

	mu      sync.Mutex            // guards pods, records and next
	pods    map[podKey]*podRunner // pods the agent runs, by namespace/name
	records []Record              // every line any container wrote
	next    int                   // round-robin index into opts.Nodes

	wake chan struct{} // buffered; nudges the reconcile loop
}

type podKey struct{ namespace, name string }

func (k podKey) String() string { return k.namespace + "/" + k.name }

// New checks opts and returns an Agent; it starts nothing.
func New(opts Options) (*Agent, error) {
	if opts.Client == nil {
		return nil, errors.New("nodeagent: Options.Client is required")
	}
	if opts.Listener == nil {
		return nil, errors.New("nodeagent: Options.Listener is required")
	}
	tcp, ok := opts.Listener.Addr().(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return nil, fmt.Errorf("nodeagent: Options.Listener address %s is not a loopback TCP address", opts.Listener.Addr())
	}
	if len(opts.ServingCert.Certificate) == 0 {
		return nil, errors.New("nodeagent: Options.ServingCert is required")
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = []string{"node-1"}
	}
	if opts.Logger == nil {
		return nil, errors.New("nodeagent: Options.Logger is required")
	}
	if opts.RestartDelay == 0 {
		opts.RestartDelay = time.Second
	}
	if opts.VolumeSyncPeriod == 0 {
		opts.VolumeSyncPeriod = 2 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	return &Agent{
		opts:   opts,
		client: opts.Client,
		log:    opts.Logger.With("component", "nodeagent"),
		port:   tcp.Port,
		pods:   map[podKey]*podRunner{},
		wake:   make(chan struct{}, 1),
	}, nil
}

// Port returns the kubelet port the Nodes report.
func (a *Agent) Port() int { return a.port }

// Run registers the Nodes, serves the kubelet endpoints and runs pods until
// ctx ends. On return every container has been stopped.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if err := a.registerNodes(ctx); err != nil {
		a.opts.Listener.Close()
		return err
	}

	srv := &http.Server{
		Handler: a.handler(),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{a.opts.ServingCert},
			MinVersion:   tls.VersionTLS12,
		},
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if a.opts.ClientCAs != nil {
		srv.TLSConfig.ClientCAs = a.opts.ClientCAs
		srv.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
	}

	factory := informers.NewSharedInformerFactory(a.client, 0)
	podInformer := factory.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.nudge() },
		UpdateFunc: func(any, any) { a.nudge() },
		DeleteFunc: func(any) { a.nudge() },
	}); err != nil {
		return fmt.Errorf("nodeagent: watch pods: %w", err)
	}

	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() {
		err := srv.ServeTLS(a.opts.Listener, "", "")
		if !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("nodeagent: serve kubelet API: %w", err)
			cancel()
		}
	})
	wg.Go(func() { a.heartbeat(ctx) })
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced) {
		cancel()
	}
	lister := podInformer.GetIndexer()
	a.log.Info("node agent running", "nodes", a.opts.Nodes, "port", a.port)

	for ctx.Err() == nil {
		a.reconcile(ctx, lister)
		select {
		case <-ctx.Done():
		case <-a.wake:
		case <-time.After(2 * time.Second):
		}
	}

	a.stopAll()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	srv.Shutdown(shutdownCtx)
	srv.Close()
	factory.Shutdown()
	wg.Wait()
	select {
	case err := <-serveErr:
		return err
	default:
		return nil
	}
}

func (a *Agent) nudge() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) ownsNode(name string) bool {
	for _, n := range a.opts.Nodes {
		if n == name {
			return true
		}
	}
	return false
}

// reconcile binds unscheduled pods, starts pods bound to the agent's nodes
// and stops the ones that are being deleted or are gone.
func (a *Agent) reconcile(ctx context.Context, store cache.Store) {
	seen := map[podKey]bool{}
	for _, obj := range store.List() {
		pod := obj.(*corev1.Pod)
		key := podKey{pod.Namespace, pod.Name}
		switch {
		case pod.Spec.NodeName == "":
			if pod.DeletionTimestamp == nil && (pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) {
				a.bind(ctx, pod)
			}
			continue
		case !a.ownsNode(pod.Spec.NodeName):
			continue
		}
		seen[key] = true
		a.mu.Lock()
		runner := a.pods[key]
		if runner != nil && runner.uid != pod.UID {
			// A pod of the same name replaced the one we run.
			runner.stop()
			delete(a.pods, key)
			runner = nil
		}
		if runner == nil && pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			runner = a.newPodRunner(pod)
			a.pods[key] = runner
			a.mu.Unlock()
			runner.start(ctx)
			continue
		}
		a.mu.Unlock()
		if runner != nil && pod.DeletionTimestamp != nil {
			runner.terminate(ctx)
		}
	}
	a.mu.Lock()
	for key, runner := range a.pods {
		if !seen[key] {
			runner.stop()
			delete(a.pods, key)
		}
	}
	a.mu.Unlock()
}

func (a *Agent) stopAll() {
	a.mu.Lock()
	runners := make([]*podRunner, 0, len(a.pods))
	for _, r := range a.pods {
		runners = append(runners, r)
	}
	a.mu.Unlock()
	for _, r := range runners {
		r.stop()
	}
}
