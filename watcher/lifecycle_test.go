package watcher

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/internal/kubetest"
)

func TestContainerRestartReadsPrevious(t *testing.T) {
	e := newEnv(t)
	// The first response stalls after 5 lines, so the next 7 lines are
	// written past the last read; then the container restarts.
	e.srv.SetLogFault(faultOnce(kubetest.FaultStall, 5))
	pod := e.runningPod("api-1", "cri://a")
	logA := e.srv.Log("cri://a")
	base := time.Now()
	wantA := numbered("old", 12)
	writeLines(logA, base, wantA[:5])
	cfg := testConfig()
	cfg.StallMin = Duration(500 * time.Millisecond)
	cfg.StallMax = Duration(500 * time.Millisecond)
	e.start(cfg, nil)
	e.waitFor("5 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 5 })
	writeLines(logA, base.Add(time.Second), wantA[5:])
	logA.Close()
	kubetest.Restart(pod, "app", "cri://b", time.Now())
	e.srv.UpdatePod(pod)
	wantB := numbered("new", 4)
	writeLines(e.srv.Log("cri://b"), time.Now(), wantB)
	e.waitFor("all old lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 12 })
	e.waitFor("new lines", 10*time.Second, func() bool { return e.got.count("cri://b") >= 4 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), wantA)
	assertExactlyOnce(t, e.got.texts("cri://b"), wantB)
	if got := e.metric("authwatch_streams_finished_total"); got != 1 {
		t.Errorf("streams finished = %v, want 1 (the old instance)", got)
	}
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "container_restart"); got != 1 {
		t.Errorf("reconnects{reason=container_restart} = %v, want 1", got)
	}

	// A second restart drops the first instance from the status: the
	// watcher forgets it, and the new instance is followed.
	e.srv.Log("cri://b").Close()
	kubetest.Restart(pod, "app", "cri://c", time.Now())
	e.srv.UpdatePod(pod)
	e.srv.Log("cri://c").Write(time.Now(), "newest")
	e.waitFor("the third instance's line", 10*time.Second, func() bool { return e.got.count("cri://c") >= 1 })
	e.waitFor("the first instance forgotten", 10*time.Second, func() bool {
		e.w.mu.Lock()
		defer e.w.mu.Unlock()
		for k := range e.w.streams {
			if k.containerID == "cri://a" {
				return false
			}
		}
		return true
	})
	e.waitFor("the second instance finished", 10*time.Second, func() bool {
		return e.metric("authwatch_streams_finished_total") == 2
	})
	assertExactlyOnce(t, e.got.texts("cri://b"), wantB)
	if got := e.metric("authwatch_streams", "state", "streaming"); got != 1 {
		t.Errorf("streams{state=streaming} = %v, want 1", got)
	}
}

func TestCompletedPodAtStart(t *testing.T) {
	e := newEnv(t)
	pod := e.runningPod("job-1", "cri://done")
	log := e.srv.Log("cri://done")
	log.Write(time.Now().Add(-10*time.Second), "token expired, giving up")
	log.Close()
	kubetest.SetTerminated(pod, "app", time.Now().Add(-20*time.Second), time.Now().Add(-5*time.Second), 1, false)
	pod.Status.Phase = "Failed"
	e.srv.UpdatePod(pod)
	e.start(testConfig(), nil)
	e.waitFor("stream finished", 10*time.Second, func() bool { return e.metric("authwatch_streams_finished_total") == 1 })
	assertExactlyOnce(t, e.got.texts("cri://done"), []string{"token expired, giving up"})
	if got := e.metric("authwatch_streams", "state", "streaming"); got != 0 {
		t.Errorf("streams{state=streaming} = %v, want 0", got)
	}
}

func TestFastInitContainer(t *testing.T) {
	e := newEnv(t)
	e.start(testConfig(), nil)
	pod := kubetest.NewPod("ns", "api-1", "1", map[string]string{"app": "api"}, "app")
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, pod.Spec.Containers[0])
	pod.Spec.InitContainers[0].Name = "init"
	e.srv.AddPod(pod)
	created := time.Now()
	time.Sleep(50 * time.Millisecond)
	kubetest.SetRunning(pod, "init", "cri://init", created.Add(50*time.Millisecond), true)
	log := e.srv.Log("cri://init")
	log.Write(created.Add(60*time.Millisecond), "GET /api/token 401 Unauthorized")
	log.Close()
	// The kubelet reports the start and the exit in one status update.
	time.Sleep(150 * time.Millisecond)
	kubetest.SetTerminated(pod, "init", created.Add(50*time.Millisecond), created.Add(200*time.Millisecond), 1, true)
	e.srv.UpdatePod(pod)
	e.waitFor("stream finished", 10*time.Second, func() bool { return e.metric("authwatch_streams_finished_total") == 1 })
	assertExactlyOnce(t, e.got.texts("cri://init"), []string{"GET /api/token 401 Unauthorized"})
}

func TestCapacityQueuesAndServesAll(t *testing.T) {
	e := newEnv(t)
	const pods = 120
	base := time.Now()
	for i := range pods {
		id := fmt.Sprintf("cri://c%d", i)
		e.runningPod(fmt.Sprintf("api-%d", i), id)
		writeLines(e.srv.Log(id), base, numbered(id, 3))
	}
	cfg := testConfig()
	cfg.MaxStreams = 50
	cfg.TimeSlice = Duration(200 * time.Millisecond)
	e.start(cfg, nil)
	e.waitFor("70 queued", 10*time.Second, func() bool {
		return e.metric("authwatch_streams", "state", "queued") == 70
	})
	if open := e.srv.Stats().OpenLogs; open > 50 {
		t.Errorf("open log streams = %d, want <= 50", open)
	}
	e.waitFor("every first batch", 20*time.Second, func() bool { return e.got.total() >= pods*3 })
	// Lines written later reach every container in its next slice.
	for i := range pods {
		id := fmt.Sprintf("cri://c%d", i)
		writeLines(e.srv.Log(id), base.Add(time.Second), numbered(id+" later", 2))
	}
	e.waitFor("every line", 30*time.Second, func() bool { return e.got.total() >= pods*5 })
	time.Sleep(100 * time.Millisecond)
	for i := range pods {
		id := fmt.Sprintf("cri://c%d", i)
		assertExactlyOnce(t, e.got.texts(id), append(numbered(id, 3), numbered(id+" later", 2)...))
	}
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "time_slice"); got != 0 {
		t.Errorf("time slices counted as reconnects: %v", got)
	}
	if open := e.srv.Stats().OpenLogs; open > 50 {
		t.Errorf("open log streams = %d, want <= 50", open)
	}
}

func TestLineHygiene(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(func(r kubetest.LogRequest, written int) kubetest.Fault {
		if r.N == 1 && written == 2 {
			return kubetest.Fault{Kind: kubetest.FaultInject, Text: "failed to create fsnotify watcher: too many open files"}
		}
		return kubetest.Fault{}
	})
	pod := e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	base := time.Now()
	big := func(n int, c byte) string { return string(bytes.Repeat([]byte{c}, n)) }
	entries := []kubetest.Entry{
		{Text: []byte("crlf line\r")},
		{Text: []byte("invalid \xff\xfe utf-8")},
		{Text: []byte(big(64<<10+1, 'a'))},
		{Text: []byte(big(1<<20, 'b'))},
		{Text: []byte(big(16<<20, 'c'))},
		{Text: []byte("401 Unauthorized without newline"), NoNewline: true},
	}
	for i := range entries {
		entries[i].Time = base.Add(time.Duration(i) * time.Millisecond)
	}
	log.Append(entries...)
	log.Close()
	kubetest.SetTerminated(pod, "app", base.Add(-time.Minute), base.Add(time.Second), 0, false)
	e.srv.UpdatePod(pod)
	e.start(testConfig(), nil)
	e.waitFor("stream finished", 20*time.Second, func() bool { return e.metric("authwatch_streams_finished_total") == 1 })
	want := []string{
		"crlf line",
		"invalid \xff\xfe utf-8",
		big(64<<10+1, 'a'),
		big(1<<20, 'b'),
		big(1<<20, 'c'), // truncated at the 1 MiB cap
		"401 Unauthorized without newline",
	}
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	e.got.mu.Lock()
	for _, l := range e.got.lines["cri://a"] {
		if wantTrunc := strings.HasPrefix(string(l.Text), "ccc"); l.Truncated != wantTrunc {
			t.Errorf("line of %d bytes: Truncated = %v, want %v", len(l.Text), l.Truncated, wantTrunc)
		}
	}
	e.got.mu.Unlock()
	if got := e.metric("authwatch_log_lines_truncated_total"); got != 1 {
		t.Errorf("truncated = %v, want 1", got)
	}
	if got := e.metric("authwatch_log_lines_dropped_total", "reason", "kubelet_error_text"); got != 1 {
		t.Errorf("dropped{kubelet_error_text} = %v, want 1", got)
	}
	if got := e.metric("authwatch_stream_errors_total", "kind", "kubelet_error"); got != 1 {
		t.Errorf("stream_errors{kubelet_error} = %v, want 1", got)
	}
}

func TestKubeletTextSecretsMasked(t *testing.T) {
	e := newEnv(t)
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0b3duLWJ1aWxkZXIifQ.c2lnbmF0dXJlLXNlY3JldA"
	e.srv.SetLogFault(func(r kubetest.LogRequest, written int) kubetest.Fault {
		if r.N == 1 && written == 1 {
			return kubetest.Fault{Kind: kubetest.FaultInject, Text: "proxy error: Authorization: Bearer " + token}
		}
		return kubetest.Fault{}
	})
	e.runningPod("api-1", "cri://a")
	writeLines(e.srv.Log("cri://a"), time.Now(), []string{"one", "two"})
	var logs syncBuffer
	e.logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.start(testConfig(), nil)
	e.waitFor("2 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 2 })
	e.waitFor("the kubelet text logged", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "kubelet error text in log stream")
	})
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), "c2lnbmF0dXJlLXNlY3JldA") {
		t.Errorf("the token reached the log:\n%s", logs.String())
	}
	checkpoint, err := e.w.MarshalCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(checkpoint, []byte("c2lnbmF0dXJlLXNlY3JldA")) {
		t.Error("the token reached the checkpoint")
	}
}
