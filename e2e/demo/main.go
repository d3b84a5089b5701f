// Command demo shows authwatch catching a workload whose API token has
// expired, on a real control plane started by the e2e harness. `make
// demo` builds what is missing and runs it; Ctrl-C stops everything and
// removes the cluster's files.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/e2e/harness"
	"github.com/authwatch/authwatch/e2e/nodeagent"
)

func main() {
	authwatch := flag.String("authwatch", "bin/authwatch", "authwatch binary to run")
	listen := flag.String("listen-address", "127.0.0.1:9090", "address for authwatch's /metrics, /healthz and /readyz")
	deployDir := flag.String("deploy", "deploy/kustomize/base", "folder with authwatch's ServiceAccount and RBAC manifests")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// With output piped to a program that Ctrl-C ended too (tee, less),
	// a write must fail rather than kill the demo before it cleans up.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(ctx, *authwatch, *listen, *deployDir); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, authwatch, listen, deployDir string) (err error) {
	if _, err := os.Stat(authwatch); err != nil {
		return fmt.Errorf("authwatch binary %s: %w (run `make build` first)", authwatch, err)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (set DEMO_LISTEN, or pass -listen-address, with a free port)", listen, err)
	}
	l.Close()

	say("starting a Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1")
	cluster, err := harness.Start(ctx, harness.Options{Logf: func(f string, a ...any) { say(f, a...) }})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping the cluster and removing %s", cluster.Dir())
		if serr := cluster.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if _, err := cluster.StartNodeAgent(ctx, harness.AgentOptions{Nodes: []string{"node-1", "node-2"}}); err != nil {
		return err
	}

	api, apiURL, err := startTownAPI()
	if err != nil {
		return err
	}
	defer api.Close()

	if err := deployTownBuilder(ctx, cluster, apiURL); err != nil {
		return err
	}
	kubeconfig, err := applyRBAC(ctx, cluster, deployDir)
	if err != nil {
		return err
	}

	say("starting authwatch as ServiceAccount authwatch/authwatch")
	cmd := exec.Command(authwatch, "run", "--kubeconfig="+kubeconfig, "-n", "town-builder", "-l", "app=town-builder",
		"--listen-address="+listen, "--checkpoint-namespace=authwatch")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start authwatch: %w", err)
	}
	exited := make(chan error, 1)
	go prefixLines("authwatch | ", out)
	go func() { exited <- cmd.Wait() }()

	metricsURL := "http://" + listen + "/metrics"
	kubectl := filepath.Join(cluster.BinDir(), "kubectl")
	fmt.Printf(`
================================================================================
authwatch is watching Deployment town-builder (2 pods) in namespace town-builder.
Its API token expired, so every call fails with 401 "Token is invalid or expired".

  metrics:   curl -s %[1]s | grep -E 'authwatch_(matches|log_lines)_total'
  pod logs:  %[2]s --kubeconfig %[3]s -n town-builder logs -l app=town-builder -f
  pods:      %[2]s --kubeconfig %[3]s -n town-builder get pods -o wide

Matches appear below every 10 s. Press Ctrl-C to stop and clean up.
================================================================================

`, metricsURL, kubectl, cluster.Kubeconfig())

	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("authwatch exited: %v", err)
		case <-ctx.Done():
			say("stopping authwatch")
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			return nil
		case <-ticker.C:
			printMatches(metricsURL)
		}
	}
}

// startTownAPI serves the API that town-builder calls. It rejects every
// token the way Django REST Framework SimpleJWT rejects an expired one.
func startTownAPI() (*http.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"detail":"Given token not valid for any token type","code":"token_not_valid"}`)
		}),
	}
	go srv.Serve(l)
	return srv, "http://" + l.Addr().String() + "/api/towns/", nil
}

func deployTownBuilder(ctx context.Context, cluster *harness.Cluster, apiURL string) error {
	const ns = "town-builder"
	say("creating Deployment %s/town-builder with an expired token in Secret town-builder-secrets", ns)
	if err := cluster.CreateNamespace(ctx, ns); err != nil {
		return err
	}
	client := cluster.Client()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "town-builder-secrets"},
		StringData: map[string]string{"TOWN_API_JWT_TOKEN": expiredJWT()},
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return err
	}
	labels := map[string]string{"app": "town-builder"}
	replicas := int32(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "town-builder", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "town-builder",
					Image: nodeagent.ScriptImage,
					Args: []string{
						`emit count=3 every=1s text="INFO town-builder: planned district {seq}"`,
						`auth url=` + apiURL + ` env=TOWN_API_JWT_TOKEN every=2s tries=2 fail="ERROR town-builder: GET /api/towns/ returned {status}: Token is invalid or expired"`,
						`loop`,
					},
					Env: []corev1.EnvVar{{Name: "TOWN_API_JWT_TOKEN", ValueFrom: &corev1.EnvVarSource{
						SecretKeyRef: &corev1.SecretKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "town-builder-secrets"},
							Key:                  "TOWN_API_JWT_TOKEN",
						},
					}}},
				}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	return cluster.WaitDeploymentAvailable(ctx, ns, "town-builder", 2*time.Minute)
}

// applyRBAC applies authwatch's ServiceAccount and RBAC from deploy/ and
// returns a kubeconfig for that ServiceAccount.
func applyRBAC(ctx context.Context, cluster *harness.Cluster, deployDir string) (string, error) {
	say("applying authwatch's ServiceAccount and RBAC from %s", deployDir)
	if _, err := cluster.Kubectl(ctx, "apply", "-f", filepath.Join(deployDir, "namespace.yaml")); err != nil {
		return "", err
	}
	if err := cluster.CreateNamespace(ctx, "authwatch"); err != nil {
		return "", err
	}
	for _, f := range []string{"serviceaccount.yaml", "rbac-self.yaml", "rbac-watch.yaml"} {
		if _, err := cluster.Kubectl(ctx, "apply", "-n", "authwatch", "-f", filepath.Join(deployDir, f)); err != nil {
			return "", err
		}
	}
	kubeconfig, _, err := cluster.ServiceAccountKubeconfig(ctx, "authwatch", "authwatch")
	return kubeconfig, err
}

// expiredJWT returns a JWT whose exp lies an hour in the past. Its
// signature is random bytes, because the demo API rejects every token.
func expiredJWT() string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"sub": "town-builder", "exp": time.Now().Add(-time.Hour).Unix()})
	sig := make([]byte, 32)
	rand.Read(sig)
	return enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)
}

// printMatches prints authwatch's match counters from /metrics.
func printMatches(url string) {
	resp, err := http.Get(url)
	if err != nil {
		say("metrics not available yet: %v", err)
		return
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if (strings.HasPrefix(l, "authwatch_matches_total{") || strings.HasPrefix(l, "authwatch_log_lines_total{")) && !strings.HasSuffix(l, " 0") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	fmt.Printf("--- %s %s\n", time.Now().Format("15:04:05"), url)
	for _, l := range lines {
		fmt.Println("    " + l)
	}
}

func prefixLines(prefix string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		fmt.Println(prefix + sc.Text())
	}
}

func say(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}
