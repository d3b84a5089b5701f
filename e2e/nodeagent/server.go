package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// kubeletTimeFormat is how a kubelet stamps lines with timestamps=true:
// RFC 3339 with nanoseconds always written out, so lines sort as text.
const kubeletTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveLogs)
	exec := func(w http.ResponseWriter, r *http.Request) { a.serveExec(w, r) }
	for _, pattern := range []string{
		"/exec/{namespace}/{pod}/{container}",
		"/exec/{namespace}/{pod}/{uid}/{container}",
	} {
		mux.HandleFunc("GET "+pattern, exec)
		mux.HandleFunc("POST "+pattern, exec)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	return mux
}

// logOptions are the query parameters of /containerLogs, as the API server
// passes them on from pods/log.
type logOptions struct {
	follow, previous, timestamps bool
	since                        time.Time // zero means from the start
	tailLines                    int       // negative means all
	limitBytes                   int64     // zero means no limit
}

func parseLogOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{
		follow:     q.Get("follow") == "true",
		previous:   q.Get("previous") == "true",
		timestamps: q.Get("timestamps") == "true",
		tailLines:  -1,
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, fmt.Errorf("invalid sinceTime %q: %w", v, err)
		}
		o.since = t
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid sinceSeconds %q: want a positive integer", v)
		}
		o.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, fmt.Errorf("invalid tailLines %q: want a non-negative integer", v)
		}
		o.tailLines = n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid limitBytes %q: want a positive integer", v)
		}
		o.limitBytes = n
	}
	return o, nil
}

// serveLogs streams a container's log as the kubelet does: only lines of
// the current log file (see RotateLog), filtered by since with the
// kubelet's comparison (a line at or after since is sent), optionally
// following until the container exits.
func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, name := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := a.lookup(ns, podName, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	c.mu.Lock()
	inst := c.current
	if opts.previous {
		inst = c.previous
	}
	c.mu.Unlock()
	if inst == nil {
		if opts.previous {
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", name, podName), http.StatusBadRequest)
		} else {
			http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", name, podName), http.StatusBadRequest)
		}
		return
	}

	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}

	inst.mu.Lock()
	next := inst.rotated
	if opts.tailLines >= 0 && len(inst.lines)-opts.tailLines > next {
		next = len(inst.lines) - opts.tailLines
	}
	cuts := inst.cuts
	inst.mu.Unlock()

	written := int64(0)
	var buf []byte
	for {
		inst.mu.Lock()
		if inst.cuts != cuts {
			inst.mu.Unlock()
			// Abort the connection mid-stream, as a network cut would.
			panic(http.ErrAbortHandler)
		}
		var batch []logLine
		if !inst.stalled {
			batch = inst.lines[next:len(inst.lines):len(inst.lines)]
			next = len(inst.lines)
		}
		done := inst.done && !inst.stalled
		changed := inst.changed
		inst.mu.Unlock()

		buf = buf[:0]
		for _, l := range batch {
			if !opts.since.IsZero() && l.time.Before(opts.since) {
				continue
			}
			if opts.timestamps {
				buf = l.time.AppendFormat(buf, kubeletTimeFormat)
				buf = append(buf, ' ')
			}
			buf = append(buf, l.text...)
			buf = append(buf, '\n')
		}
		if opts.limitBytes > 0 && written+int64(len(buf)) >= opts.limitBytes {
			w.Write(buf[:opts.limitBytes-written])
			return
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return
			}
			written += int64(len(buf))
			if flusher != nil {
				flusher.Flush()
			}
		}
		if !opts.follow {
			return
		}
		if done {
			if len(batch) == 0 {
				return
			}
			// Pick up lines written just before the exit, then end.
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		}
	}
}

// serveExec runs a command next to the container, with the container's
// environment and working folder, over the remotecommand protocol that
// the API server speaks to kubelets.
func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	ns, podName, name := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	c, err := a.lookup(ns, podName, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command", http.StatusBadRequest)
		return
	}
	a.log.Info("exec in container", "namespace", ns, "pod", podName, "container", name, "command", cmd[0])
	remotecommand.ServeExec(w, r, &executor{c: c}, ns+"/"+podName, string(c.pod.uid), name, cmd, opts,
		5*time.Minute, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

type executor struct{ c *container }

func (e *executor) ExecInContainer(ctx context.Context, _, _, _ string, argv []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if tty {
		return errors.New("the authwatch node agent does not allocate terminals: run exec without -t")
	}
	env, err := e.c.pod.a.resolveEnv(ctx, e.c.pod.pod, &e.c.spec)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = e.c.spec.WorkingDir
	cmd.Env = processEnv(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if in != nil {
		cmd.Stdin = in
	}
	if out != nil {
		cmd.Stdout = out
	}
	if errw != nil {
		cmd.Stderr = errw
	}
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("run %s: %w", strings.Join(argv, " "), err)
	}
	return nil
}
