//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/authwatch/authwatch/e2e/harness"
)

// daemon is an authwatch process that a test started, with its output
// kept for the test to read.
type daemon struct {
	cmd     *exec.Cmd
	addr    string     // host:port of the metrics and health server
	mu      sync.Mutex // guards out
	out     bytes.Buffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // the error of cmd.Wait, set before done is closed
}

// daemonOptions are the settings that differ between the ways the tests
// start authwatch.
type daemonOptions struct {
	// bin is the authwatch binary: authwatchBin when empty.
	bin string
	// addr is the loopback address that args tell authwatch to serve
	// metrics and health checks on.
	addr string
	// args are the command line after the binary.
	args []string
	// env adds to the environment of the test.
	env []string
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port that was free
// a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDaemon starts authwatch with opts and returns at once. The
// process is stopped when the test ends, and its output is logged when
// the test failed or AUTHWATCH_E2E_VERBOSE is set.
func startDaemon(t *testing.T, opts daemonOptions) *daemon {
	t.Helper()
	bin := opts.bin
	if bin == "" {
		bin = authwatchBin
	}
	d := &daemon{addr: opts.addr, done: make(chan struct{})}
	d.cmd = exec.Command(bin, opts.args...)
	d.cmd.Env = append(os.Environ(), opts.env...)
	w := &lockedWriter{mu: &d.mu, w: &d.out}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() || os.Getenv("AUTHWATCH_E2E_VERBOSE") != "" {
			t.Logf("authwatch pid %d %v output:\n%s", d.cmd.Process.Pid, opts.args, d.output())
		}
	})
	return d
}

// startAuthwatch runs `authwatch run` with kubeconfig and args, serving
// metrics on a free loopback port, and waits until /readyz is 200. A
// standby replica is ready too, because otherwise a Deployment's rolling
// update, whose new pods are standbys, would never proceed.
func startAuthwatch(t *testing.T, kubeconfig string, args ...string) *daemon {
	t.Helper()
	addr := freeLoopbackAddr(t)
	d := startDaemon(t, daemonOptions{
		addr: addr,
		args: append([]string{"run", "--kubeconfig=" + kubeconfig, "--listen-address=" + addr, "--log-level=debug"}, args...),
		env:  []string{"POD_NAMESPACE=authwatch"},
	})
	d.waitReady(t)
	return d
}

// waitReady waits up to a minute until /readyz is 200, and fails the test
// at once if the process exits.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	err := harness.WaitFor(t.Context(), time.Minute, "authwatch /readyz", func(ctx context.Context) (bool, error) {
		if !d.running() {
			return false, fmt.Errorf("%w: authwatch exited: %v", harness.ErrStopWaiting, d.waitErr)
		}
		body, code, err := d.get(ctx, "/readyz")
		if err != nil {
			return false, err
		}
		return code == http.StatusOK, fmt.Errorf("HTTP %d: %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stop interrupts the process and waits for it to exit, killing it after
// 15 seconds.
func (d *daemon) stop() {
	if !d.running() {
		return
	}
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *daemon) get(ctx context.Context, path string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+path, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), resp.StatusCode, err
}

// metrics scrapes /metrics.
func (d *daemon) metrics(ctx context.Context) (samples, error) {
	body, code, err := d.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", code)
	}
	return parseSamples(body)
}

// waitMetric waits until the sum of metric name over the series with
// labels reaches at least min.
func (d *daemon) waitMetric(t *testing.T, name string, labels map[string]string, min float64, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(t.Context(), timeout, fmt.Sprintf("%s%v >= %v", name, labels, min), func(ctx context.Context) (bool, error) {
		if !d.running() {
			return false, fmt.Errorf("%w: authwatch exited: %v", harness.ErrStopWaiting, d.waitErr)
		}
		s, err := d.metrics(ctx)
		if err != nil {
			return false, err
		}
		got := s.sum(name, labels)
		return got >= min, fmt.Errorf("%s%v = %v", name, labels, got)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lockedWriter serialises writes to w, so that the process's stdout and
// stderr can share one buffer that the test reads while they write.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
