package nodeagent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Container images the agent runs. Any other image is reported as a
// container that cannot start.
const (
	// ScriptImage runs the container's args as a script of steps; see
	// parseScript for the steps.
	ScriptImage = "authwatch.test/script"
	// ProcessImage runs command+args as a local process in workingDir,
	// with the container's environment; its output lines are the log.
	ProcessImage = "authwatch.test/process"
)

// program is what an instance of a container runs. run returns the exit
// code and the reason a kubelet would report ("Completed" or "Error").
type program interface {
	run(ctx context.Context, out *instance, env []string) (int32, string)
}

func newProgram(spec *corev1.Container) (program, error) {
	image := strings.SplitN(spec.Image, ":", 2)[0]
	switch image {
	case ScriptImage:
		return parseScript(spec.Args)
	case ProcessImage:
		argv := append(append([]string{}, spec.Command...), spec.Args...)
		if len(argv) == 0 {
			return nil, errors.New("image " + ProcessImage + " needs a command")
		}
		return &processProgram{argv: argv, dir: spec.WorkingDir}, nil
	default:
		return nil, fmt.Errorf("image %q is not run by the authwatch node agent: use %s or %s", spec.Image, ScriptImage, ProcessImage)
	}
}

// processProgram runs a local process, such as a Django development
// server, as the container.
type processProgram struct {
	argv []string
	dir  string
}

func (p *processProgram) run(ctx context.Context, out *instance, env []string) (int32, string) {
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.Env = processEnv(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		out.write("stderr", "start failed: "+err.Error())
		return 128, "StartError"
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		out.write("stderr", "start failed: "+err.Error())
		return 128, "StartError"
	}
	if err := cmd.Start(); err != nil {
		out.write("stderr", "start failed: "+err.Error())
		return 128, "StartError"
	}
	var wg sync.WaitGroup
	copyLines := func(stream string, r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			out.write(stream, strings.TrimSuffix(sc.Text(), "\r"))
		}
	}
	wg.Go(func() { copyLines("stdout", stdout) })
	wg.Go(func() { copyLines("stderr", stderr) })
	exited := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			// SIGTERM to the process group, then SIGKILL after a grace.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		case <-exited:
		}
	})
	err = cmd.Wait()
	close(exited)
	wg.Wait()
	return exitStatus(err)
}

func exitStatus(err error) (int32, string) {
	if err == nil {
		return 0, "Completed"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int32(ws.Signal()), "Error"
		}
		return int32(ee.ExitCode()), "Error"
	}
	return 128, "Error"
}

// processEnv is the environment of a local process: the agent's PATH, HOME
// and locale, then the container's variables, which win.
func processEnv(env []string) []string {
	var base []string
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			base = append(base, k+"="+v)
		}
	}
	return append(base, env...)
}

// script is a container program made of steps, one per container arg:
//
//	emit [count=N] [every=DURATION] [stream=stdout|stderr] text=TEXT
//	    writes TEXT N times (default 1, 0 means forever), waiting
//	    DURATION (default 0) between lines. TEXT may hold {seq}, the
//	    1-based number of the line within this instance, {restart} and
//	    {pod}.
//	auth url=URL (env=NAME | file=PATH) [scheme=Bearer] [every=DURATION] [tries=N] [fail=TEXT] [ok=TEXT]
//	    calls GET URL with "Authorization: SCHEME $NAME", or with the
//	    token in PATH on a volume mount, read at each call, every DURATION
//	    (default 1s), writing fail (with {status}) after each failed
//	    call, until a 2xx response, then writes ok and goes on. With
//	    tries, it goes on after N failed calls too (0, the default, means
//	    no limit).
//	sleep DURATION | sleep forever
//	exit [CODE]
//	loop [times=N]
//	    starts again at the first step, N more times (default forever).
//
// Values with spaces are double-quoted; \" and \\ escape inside quotes.
// After the last step the container exits with code 0.
type script struct {
	steps []step
}

type step struct {
	verb string
	args map[string]string
}

var stepKeys = map[string][]string{
	"emit":  {"count", "every", "stream", "text"},
	"auth":  {"url", "env", "file", "scheme", "every", "tries", "fail", "ok"},
	"sleep": {},
	"exit":  {},
	"loop":  {"times"},
}

func parseScript(args []string) (*script, error) {
	if len(args) == 0 {
		return nil, errors.New("image " + ScriptImage + " needs args, one script step each")
	}
	s := &script{}
	for i, arg := range args {
		words, err := splitWords(arg)
		if err != nil {
			return nil, fmt.Errorf("script step %d %q: %w", i, arg, err)
		}
		if len(words) == 0 {
			return nil, fmt.Errorf("script step %d is empty", i)
		}
		st := step{verb: words[0], args: map[string]string{}}
		keys, ok := stepKeys[st.verb]
		if !ok {
			return nil, fmt.Errorf("script step %d %q: unknown step %q (want emit, auth, sleep, exit or loop)", i, arg, st.verb)
		}
		for _, w := range words[1:] {
			k, v, found := strings.Cut(w, "=")
			if st.verb == "sleep" || st.verb == "exit" {
				st.args["value"] = w
				continue
			}
			if !found || !contains(keys, k) {
				return nil, fmt.Errorf("script step %d %q: unknown argument %q (want one of %v as key=value)", i, arg, w, keys)
			}
			st.args[k] = v
		}
		if err := st.check(); err != nil {
			return nil, fmt.Errorf("script step %d %q: %w", i, arg, err)
		}
		s.steps = append(s.steps, st)
	}
	return s, nil
}

func (st step) check() error {
	for _, k := range []string{"count", "times", "tries"} {
		if v, ok := st.args[k]; ok {
			if _, err := strconv.Atoi(v); err != nil {
				return fmt.Errorf("%s=%q is not an integer", k, v)
			}
		}
	}
	for _, k := range []string{"every"} {
		if v, ok := st.args[k]; ok {
			if _, err := time.ParseDuration(v); err != nil {
				return fmt.Errorf("%s=%q is not a duration such as 100ms", k, v)
			}
		}
	}
	switch st.verb {
	case "emit":
		if _, ok := st.args["text"]; !ok {
			return errors.New("emit needs text=")
		}
		if s := st.args["stream"]; s != "" && s != "stdout" && s != "stderr" {
			return fmt.Errorf("stream=%q: want stdout or stderr", s)
		}
	case "auth":
		if st.args["url"] == "" || (st.args["env"] == "") == (st.args["file"] == "") {
			return errors.New("auth needs url= and one of env= or file=")
		}
	case "sleep":
		if v := st.args["value"]; v != "forever" {
			if _, err := time.ParseDuration(v); err != nil {
				return fmt.Errorf("sleep %q: want a duration such as 2s, or forever", v)
			}
		}
	case "exit":
		if v, ok := st.args["value"]; ok {
			if _, err := strconv.Atoi(v); err != nil {
				return fmt.Errorf("exit %q: want an integer exit code", v)
			}
		}
	}
	return nil
}

func (s *script) run(ctx context.Context, out *instance, env []string) (int32, string) {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	seq := 0
	format := func(text string, extra ...string) string {
		seq++
		r := strings.NewReplacer(append([]string{
			"{seq}", strconv.Itoa(seq),
			"{restart}", strconv.Itoa(int(out.restart)),
			"{pod}", out.c.pod.key.name,
		}, extra...)...)
		return r.Replace(text)
	}
	client := out.c.pod.a.opts.HTTPClient

	loops := 0
	for i := 0; i < len(s.steps); i++ {
		st := s.steps[i]
		if ctx.Err() != nil {
			return 137, "Error"
		}
		switch st.verb {
		case "loop":
			times, ok := st.args["times"]
			n, _ := strconv.Atoi(times)
			if !ok || loops < n {
				loops++
				i = -1
			}
		case "emit":
			count := 1
			if v, ok := st.args["count"]; ok {
				count, _ = strconv.Atoi(v)
			}
			every, _ := time.ParseDuration(st.args["every"])
			stream := st.args["stream"]
			if stream == "" {
				stream = "stdout"
			}
			for n := 0; count == 0 || n < count; n++ {
				if n > 0 && !sleepCtx(ctx, every) {
					return 137, "Error"
				}
				if ctx.Err() != nil {
					return 137, "Error"
				}
				out.write(stream, format(st.args["text"]))
			}
		case "auth":
			if !s.auth(ctx, out, client, st, vars, format) {
				return 137, "Error"
			}
		case "sleep":
			if st.args["value"] == "forever" {
				<-ctx.Done()
				return 137, "Error"
			}
			d, _ := time.ParseDuration(st.args["value"])
			if !sleepCtx(ctx, d) {
				return 137, "Error"
			}
		case "exit":
			code, _ := strconv.Atoi(st.args["value"])
			if code == 0 {
				return 0, "Completed"
			}
			return int32(code), "Error"
		}
	}
	return 0, "Completed"
}

// auth runs one auth step and reports false when ctx ended first.
func (s *script) auth(ctx context.Context, out *instance, client *http.Client, st step, vars map[string]string, format func(string, ...string) string) bool {
	every := time.Second
	if v, ok := st.args["every"]; ok {
		every, _ = time.ParseDuration(v)
	}
	scheme := st.args["scheme"]
	if scheme == "" {
		scheme = "Bearer"
	}
	url := st.args["url"]
	fail := st.args["fail"]
	if fail == "" {
		fail = "ERROR GET " + url + " failed: HTTP {status}"
	}
	ok := st.args["ok"]
	if ok == "" {
		ok = "INFO GET " + url + " succeeded: HTTP {status}"
	}
	tries, _ := strconv.Atoi(st.args["tries"])
	for n := 0; tries == 0 || n < tries; n++ {
		if n > 0 && !sleepCtx(ctx, every) {
			return false
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			out.write("stderr", format("ERROR invalid auth url: "+err.Error()))
			return sleepForever(ctx)
		}
		token := vars[st.args["env"]]
		if file := st.args["file"]; file != "" {
			b, err := out.c.readFile(file)
			if err != nil {
				out.write("stderr", format("ERROR read token file: "+err.Error()))
				continue
			}
			token = strings.TrimSpace(string(b))
		}
		req.Header.Set("Authorization", scheme+" "+token)
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			out.write("stderr", format("ERROR GET "+url+" failed: connection error"))
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		status := strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			out.write("stdout", format(ok, "{status}", status))
			return true
		}
		out.write("stdout", format(fail, "{status}", status))
	}
	return true
}

func sleepForever(ctx context.Context) bool {
	<-ctx.Done()
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitWords splits a step on spaces, keeping double-quoted values
// together.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (ch == ' ' || ch == '\t' || ch == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated double quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
