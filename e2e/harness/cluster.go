// Package harness starts a real Kubernetes control plane on loopback for the
// end-to-end tests and the demo: etcd, kube-apiserver and
// kube-controller-manager built from the pinned modules (see
// e2e/kube/build.sh), plus the in-process node agent that stands in for a
// kubelet. It writes an admin kubeconfig, creates kubeconfigs for
// ServiceAccounts and static users, and stops every process it started.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// BinDirEnv names the environment variable that points at the folder with
// etcd, kube-apiserver, kube-controller-manager and kubectl; the Makefile
// sets it from `e2e/kube/build.sh --print-dir`.
const BinDirEnv = "AUTHWATCH_KUBE_BIN"

// AdminUser is the static-token identity of the admin kubeconfig; it is in
// the system:masters group.
const AdminUser = "authwatch-e2e:admin"

// NodeAgentUser is the static-token identity of the node agent. The harness
// binds it to a ClusterRole that lets it register Nodes, bind pods, write
// pod status and read the Secrets and ConfigMaps that pods reference.
const NodeAgentUser = "authwatch-e2e:node-agent"

// Options configure a cluster. The zero value is valid when BinDirEnv is
// set.
type Options struct {
	// BinDir holds the cluster binaries; empty means $AUTHWATCH_KUBE_BIN.
	BinDir string
	// Dir is the folder for data, certificates, kubeconfigs and logs.
	// Empty means a new temporary folder, removed by Stop.
	Dir string
	// Users are extra static-token identities (no groups, so they can do
	// only what RBAC grants them); UserKubeconfig returns a kubeconfig for
	// each. The API server reads its token file only at start.
	Users []string
	// StartTimeout bounds Start. Zero means 2 minutes.
	StartTimeout time.Duration
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a running control plane. Its methods are safe for concurrent
// use.
type Cluster struct {
	opts    Options
	dir     string
	ownDir  bool
	bin     string
	ca      *authority
	tokens  map[string]string // user -> bearer token
	apiPort int
	etcdURL string
	serial  int64

	etcd *process
	kcm  *process

	mu        sync.Mutex // guards apiserver and stopped
	apiserver *process
	stopped   bool

	adminConfig *rest.Config
	client      kubernetes.Interface

	agentsMu sync.Mutex // guards agents
	agents   []*agentRun
}

// Start builds the cluster's files and starts etcd, kube-apiserver and
// kube-controller-manager, returning once the API server is ready and the
// controllers have created the default ServiceAccount. On error everything
// already started is stopped again.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	bin := opts.BinDir
	if bin == "" {
		bin = os.Getenv(BinDirEnv)
	}
	if bin == "" {
		return nil, fmt.Errorf("harness: no cluster binaries: set %s to the folder that `e2e/kube/build.sh --print-dir ~/.cache/authwatch` prints (make kube-bins builds it)", BinDirEnv)
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("harness: %s missing in %s=%s: run `make kube-bins`: %w", name, BinDirEnv, bin, err)
		}
	}

	c = &Cluster{opts: opts, bin: bin, tokens: map[string]string{}, serial: 10}
	if opts.Dir != "" {
		c.dir = opts.Dir
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	} else {
		c.dir, err = os.MkdirTemp("", "authwatch-e2e-")
		if err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		c.ownDir = true
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.tail())
			c.Stop()
		}
	}()

	if err := c.writeFiles(); err != nil {
		return nil, err
	}
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	if err := c.setupRBAC(ctx); err != nil {
		return nil, err
	}
	if err := c.startControllerManager(ctx); err != nil {
		return nil, err
	}
	if err := c.waitServiceAccount(ctx, "default", "default"); err != nil {
		return nil, fmt.Errorf("harness: controllers did not create the default ServiceAccount: %w", err)
	}
	opts.Logf("harness: cluster ready at %s (files in %s)", c.Server(), c.dir)
	return c, nil
}

// Dir returns the cluster's folder: kubeconfigs, certificates and logs.
func (c *Cluster) Dir() string { return c.dir }

// Server returns the API server URL, https://127.0.0.1:<port>.
func (c *Cluster) Server() string { return "https://127.0.0.1:" + strconv.Itoa(c.apiPort) }

// Kubeconfig returns the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, "admin.kubeconfig") }

// CAFile returns the path of the cluster CA certificate.
func (c *Cluster) CAFile() string { return filepath.Join(c.dir, "ca.crt") }

// BinDir returns the folder with the cluster binaries, kubectl among them.
func (c *Cluster) BinDir() string { return c.bin }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.adminConfig) }

// Client returns an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

func (c *Cluster) nextSerial() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serial++
	return c.serial
}

func (c *Cluster) path(name string) string { return filepath.Join(c.dir, name) }

func (c *Cluster) writeFiles() error {
	ca, err := newAuthority()
	if err != nil {
		return fmt.Errorf("harness: create CA: %w", err)
	}
	c.ca = ca
	servingCert, servingKey, err := ca.issue(2, "kube-apiserver", nil,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost", "kubernetes.default.svc"})
	if err != nil {
		return fmt.Errorf("harness: issue API server certificate: %w", err)
	}
	// The API server presents this certificate to the node agent's kubelet
	// endpoints, as it does to a real kubelet.
	kubeletClientCert, kubeletClientKey, err := ca.issue(3, "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil)
	if err != nil {
		return fmt.Errorf("harness: issue kubelet client certificate: %w", err)
	}
	saKey, saPub, err := serviceAccountKey()
	if err != nil {
		return fmt.Errorf("harness: create service account key: %w", err)
	}

	users := append([]string{AdminUser, NodeAgentUser, "system:kube-controller-manager"}, c.opts.Users...)
	var tokenCSV strings.Builder
	for i, user := range users {
		if _, dup := c.tokens[user]; dup {
			return fmt.Errorf("harness: user %q listed twice in Options.Users", user)
		}
		token, err := randomToken()
		if err != nil {
			return err
		}
		c.tokens[user] = token
		groups := ""
		if user == AdminUser {
			groups = "system:masters"
		}
		fmt.Fprintf(&tokenCSV, "%s,%s,uid-%d,%q\n", token, user, i, groups)
	}

	files := map[string][]byte{
		c.path("ca.crt"):                  ca.certPEM,
		c.path("apiserver.crt"):           servingCert,
		c.path("apiserver.key"):           servingKey,
		c.path("kubelet-client.crt"):      kubeletClientCert,
		c.path("kubelet-client.key"):      kubeletClientKey,
		c.path("service-account.key"):     saKey,
		c.path("service-account.pub"):     saPub,
		c.path("tokens.csv"):              []byte(tokenCSV.String()),
		c.path("admin.kubeconfig"):        nil,
		c.path("controller-manager.conf"): nil,
	}
	if c.apiPort, err = freePort(); err != nil {
		return err
	}
	files[c.path("admin.kubeconfig")] = c.kubeconfig(AdminUser, c.tokens[AdminUser], "")
	files[c.path("controller-manager.conf")] = c.kubeconfig("system:kube-controller-manager", c.tokens["system:kube-controller-manager"], "")
	if err := writeFiles(files); err != nil {
		return err
	}
	c.adminConfig = &rest.Config{
		Host:            c.Server(),
		BearerToken:     c.tokens[AdminUser],
		TLSClientConfig: rest.TLSClientConfig{CAData: ca.certPEM},
		QPS:             100,
		Burst:           200,
	}
	c.client, err = kubernetes.NewForConfig(c.adminConfig)
	if err != nil {
		return fmt.Errorf("harness: admin client: %w", err)
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	c.etcdURL = clientURL
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	c.etcd = &process{
		name: "etcd",
		path: filepath.Join(c.bin, "etcd"),
		args: []string{
			"--name=e2e",
			"--data-dir=" + c.path("etcd-data"),
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=e2e=" + peerURL,
			"--log-level=warn",
			// Test data need not survive a power cut; fsync on a busy
			// shared disk slows every write by tens of milliseconds.
			"--unsafe-no-fsync",
		},
		logPath: c.path("etcd.log"),
	}
	c.opts.Logf("harness: starting etcd on %s", clientURL)
	if err := c.etcd.start(); err != nil {
		return err
	}
	return waitHTTP(ctx, c.etcd, clientURL+"/health", nil)
}

// StartAPIServer starts kube-apiserver, or starts it again after
// StopAPIServer on the same port with the same data, and waits for /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("harness: cluster stopped")
	}
	if c.apiserver != nil && c.apiserver.running() {
		c.mu.Unlock()
		return errors.New("harness: kube-apiserver already running")
	}
	p := &process{
		name: "kube-apiserver",
		path: filepath.Join(c.bin, "kube-apiserver"),
		args: []string{
			"--etcd-servers=" + c.etcdURL,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(c.apiPort),
			// The default reconciler publishes the bind address as the
			// kubernetes Service endpoint, which rejects loopback.
			"--endpoint-reconciler-type=none",
			// Otherwise the server names a host interface in the URLs it
			// generates.
			"--external-hostname=127.0.0.1",
			"--cert-dir=" + c.path("apiserver-certs"),
			"--tls-cert-file=" + c.path("apiserver.crt"),
			"--tls-private-key-file=" + c.path("apiserver.key"),
			"--client-ca-file=" + c.path("ca.crt"),
			"--token-auth-file=" + c.path("tokens.csv"),
			"--authorization-mode=Node,RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.path("service-account.pub"),
			"--service-account-signing-key-file=" + c.path("service-account.key"),
			"--service-cluster-ip-range=10.96.0.0/24",
			"--kubelet-client-certificate=" + c.path("kubelet-client.crt"),
			"--kubelet-client-key=" + c.path("kubelet-client.key"),
			"--kubelet-certificate-authority=" + c.path("ca.crt"),
			"--kubelet-preferred-address-types=InternalIP",
			"--profiling=false",
		},
		logPath: c.path("kube-apiserver.log"),
	}
	c.apiserver = p
	c.mu.Unlock()

	c.opts.Logf("harness: starting kube-apiserver on %s", c.Server())
	if err := p.start(); err != nil {
		return err
	}
	return waitHTTP(ctx, p, c.Server()+"/readyz", c.adminConfig)
}

// StopAPIServer stops kube-apiserver and leaves etcd, the controllers and
// the node agents running, to test how clients survive an outage.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	c.opts.Logf("harness: stopping kube-apiserver")
	return p.stop(15 * time.Second)
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	c.kcm = &process{
		name: "kube-controller-manager",
		path: filepath.Join(c.bin, "kube-controller-manager"),
		args: []string{
			"--kubeconfig=" + c.path("controller-manager.conf"),
			"--controllers=deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller," +
				"job-controller,serviceaccount-controller,serviceaccount-token-controller,garbage-collector-controller," +
				"namespace-controller,root-ca-certificate-publisher-controller",
			"--service-account-private-key-file=" + c.path("service-account.key"),
			"--root-ca-file=" + c.path("ca.crt"),
			"--use-service-account-credentials=true",
			"--leader-elect=false",
			"--secure-port=0",
			"--concurrent-deployment-syncs=2",
			"--concurrent-replicaset-syncs=2",
			"--profiling=false",
		},
		logPath: c.path("kube-controller-manager.log"),
	}
	c.opts.Logf("harness: starting kube-controller-manager")
	return c.kcm.start()
}

// Stop ends the node agents and every process the cluster started, in
// reverse order, and removes the cluster's folder when Start created it.
// It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	api := c.apiserver
	c.mu.Unlock()

	errs := []error{c.stopAgents()}
	if c.kcm != nil {
		errs = append(errs, c.kcm.stop(10*time.Second))
	}
	if api != nil {
		errs = append(errs, api.stop(15*time.Second))
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.stop(10*time.Second))
	}
	if c.ownDir {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// DumpLogs writes the log of each process, as much as is left, to w. Tests
// call it when they fail; nothing is written after the folder is removed.
func (c *Cluster) DumpLogs(w io.Writer) {
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		data, err := os.ReadFile(c.path(name + ".log"))
		if err != nil {
			fmt.Fprintf(w, "=== %s log: %v\n", name, err)
			continue
		}
		fmt.Fprintf(w, "=== %s log (%s)\n%s\n", name, c.path(name+".log"), data)
	}
}

// tail returns the last lines of each process log as an error, to explain
// a failed Start.
func (c *Cluster) tail() error {
	var b strings.Builder
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		data, err := os.ReadFile(c.path(name + ".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "--- last lines of %s.log:\n%s\n", name, strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return nil
	}
	return errors.New(b.String())
}

// waitHTTP polls url until it returns 200, p exits or ctx ends. With cfg
// set, it authenticates as that config's user and trusts the cluster CA.
func waitHTTP(ctx context.Context, p *process, url string, cfg *rest.Config) error {
	client := http.DefaultClient
	if cfg != nil {
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		client = &http.Client{Transport: rt}
	}
	var last error
	for {
		if err := p.exited(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s: %s", url, resp.Status, body)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: %s not ready: %w (last error: %v)", p.name, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("harness: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return hex.EncodeToString(b), nil
}
