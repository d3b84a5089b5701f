package watcher

import (
	"testing"
	"time"

	"github.com/authwatch/authwatch/internal/kubetest"
)

func TestStreamCleanEOFReopens(t *testing.T) {
	e := newEnv(t)
	// The server ends the first response cleanly after 3 lines while the
	// container still runs.
	e.srv.SetLogFault(func(r kubetest.LogRequest, written int) kubetest.Fault {
		if r.N == 1 && written == 3 {
			return kubetest.Fault{Kind: kubetest.FaultEOF}
		}
		return kubetest.Fault{}
	})
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	want := numbered("line", 10)
	base := time.Now()
	writeLines(log, base, want[:6])
	e.start(testConfig(), nil)
	e.waitFor("6 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 6 })
	writeLines(log, base.Add(time.Second), want[6:])
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "eof"); got < 1 {
		t.Errorf("reconnects{reason=eof} = %v, want >= 1", got)
	}
	if got := e.metric("authwatch_log_lines_total", "namespace", "ns", "workload", "Pod/api-1"); got != 10 {
		t.Errorf("authwatch_log_lines_total = %v, want 10", got)
	}
	if got := e.metric("authwatch_streams", "state", "streaming"); got != 1 {
		t.Errorf("streams{state=streaming} = %v, want 1", got)
	}
	e.lintMetrics()
}

// faultOnce applies kind on the first request for the instance, before
// line n.
func faultOnce(kind kubetest.FaultKind, n int) kubetest.LogFaultFunc {
	return func(r kubetest.LogRequest, written int) kubetest.Fault {
		if r.N == 1 && written == n {
			return kubetest.Fault{Kind: kind}
		}
		return kubetest.Fault{}
	}
}

func TestStreamResetMidLine(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultResetMidLine, 5))
	e.runningPod("api-1", "cri://a")
	want := numbered("a fairly long line so that half of it is a partial line", 10)
	writeLines(e.srv.Log("cri://a"), time.Now(), want)
	e.start(testConfig(), nil)
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "error"); got < 1 {
		t.Errorf("reconnects{reason=error} = %v, want >= 1", got)
	}
	if got := e.metric("authwatch_stream_errors_total", "kind", "read"); got < 1 {
		t.Errorf("stream_errors{kind=read} = %v, want >= 1", got)
	}
}

func TestStreamStallReopens(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultStall, 5))
	e.runningPod("api-1", "cri://a")
	want := numbered("line", 10)
	writeLines(e.srv.Log("cri://a"), time.Now(), want)
	cfg := testConfig()
	cfg.StallMin = Duration(300 * time.Millisecond)
	cfg.StallMax = Duration(300 * time.Millisecond)
	e.start(cfg, nil)
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "stall"); got < 1 {
		t.Errorf("reconnects{reason=stall} = %v, want >= 1", got)
	}
}

func TestStreamGoAway(t *testing.T) {
	e := newEnv(t)
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	want := numbered("line", 20)
	base := time.Now()
	writeLines(log, base, want[:10])
	e.start(testConfig(), nil)
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	watches := e.srv.Stats().WatchRequests
	if err := e.srv.GoAway(); err != nil {
		t.Fatal(err)
	}
	writeLines(log, base.Add(time.Second), want[10:])
	// A pod created after the GOAWAY shows that the watch came back.
	e.runningPod("api-2", "cri://b")
	writeLines(e.srv.Log("cri://b"), base.Add(2*time.Second), []string{"after goaway"})
	e.waitFor("20 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 20 })
	e.waitFor("the new pod's line", 10*time.Second, func() bool { return e.got.count("cri://b") >= 1 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	assertExactlyOnce(t, e.got.texts("cri://b"), []string{"after goaway"})
	if got := e.srv.Stats().WatchRequests; got <= watches {
		t.Errorf("watch requests = %d after GOAWAY, want more than %d", got, watches)
	}
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "eof"); got < 1 {
		t.Errorf("reconnects{reason=eof} = %v, want >= 1", got)
	}
}

func TestStreamIdenticalTimestamps(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultReset, 500))
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	ts := time.Now().Truncate(time.Second).Add(300 * time.Millisecond)
	var want []string
	for i := range 1000 {
		// Half of the lines repeat the same text too.
		text := "same text"
		if i%2 == 1 {
			text = numbered("line", 1000)[i]
		}
		want = append(want, text)
		log.Write(ts, text)
	}
	e.start(testConfig(), nil)
	e.waitFor("1000 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 1000 })
	time.Sleep(100 * time.Millisecond)
	got := e.got.texts("cri://a")
	if len(got) != len(want) {
		t.Fatalf("delivered %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d = %q, want %q", i, got[i], want[i])
		}
	}
	if got := e.metric("authwatch_log_lines_deduplicated_total"); got != 500 {
		t.Errorf("deduplicated = %v, want 500", got)
	}
}

func TestStreamDisconnectInsideOneSecond(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultReset, 3))
	e.runningPod("api-1", "cri://a")
	sec := time.Now().Truncate(time.Second)
	want := numbered("line", 6)
	writeLines(e.srv.Log("cri://a"), sec.Add(100*time.Millisecond), want)
	e.start(testConfig(), nil)
	e.waitFor("6 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 6 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
}

func TestStreamNonMonotonicTimestamps(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultReset, 4))
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	base := time.Now().Truncate(time.Second)
	// stdout and stderr interleaved: timestamps go back by up to 1.5s.
	offsets := []time.Duration{1500, 1700, 200, 1800, 300, 2100, 900, 2500}
	var want []string
	for i, off := range offsets {
		text := numbered("line", len(offsets))[i]
		want = append(want, text)
		log.Write(base.Add(off*time.Millisecond), text)
	}
	e.start(testConfig(), nil)
	e.waitFor("8 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= len(want) })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
}

func TestResumeGapAfterRotation(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLogFault(faultOnce(kubetest.FaultStall, 5))
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	log.SetMaxEntries(8)
	lines := numbered("line", 15)
	base := time.Now()
	writeLines(log, base, lines[:5])
	cfg := testConfig()
	cfg.StallMin = Duration(500 * time.Millisecond)
	cfg.StallMax = Duration(500 * time.Millisecond)
	e.start(cfg, nil)
	e.waitFor("5 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 5 })
	// While the stream stalls, the kubelet rotates lines 0 to 6 away.
	writeLines(log, base.Add(time.Second), lines[5:])
	e.waitFor("the lines after the rotation", 10*time.Second, func() bool { return e.got.count("cri://a") >= 13 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), append(lines[:5:5], lines[7:]...))
	if got := e.metric("authwatch_stream_resume_gaps_suspected_total"); got != 1 {
		t.Errorf("resume gaps suspected = %v, want 1", got)
	}
}

func TestClockSkewCounted(t *testing.T) {
	e := newEnv(t)
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	log.Write(time.Now(), "now")
	log.Write(time.Now().Add(time.Minute), "from a node clock a minute ahead")
	e.start(testConfig(), nil)
	e.waitFor("2 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 2 })
	if got := e.metric("authwatch_log_lines_clock_skew_total"); got != 1 {
		t.Errorf("clock skew lines = %v, want 1", got)
	}
	if got := e.metric("authwatch_log_line_read_lag_seconds"); got != 2 {
		t.Errorf("read lag observations = %v, want 2", got)
	}
}

func TestConnectionDropped(t *testing.T) {
	e := newEnv(t)
	e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	want := numbered("line", 20)
	base := time.Now()
	writeLines(log, base, want[:10])
	e.start(testConfig(), nil)
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	watches := e.srv.Stats().WatchRequests
	// The watch and the log stream share the connection that drops.
	e.srv.DropConnections()
	writeLines(log, base.Add(time.Second), want[10:])
	e.runningPod("api-2", "cri://b")
	e.srv.Log("cri://b").Write(base.Add(2*time.Second), "after the drop")
	e.waitFor("20 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 20 })
	e.waitFor("the new pod's line", 10*time.Second, func() bool { return e.got.count("cri://b") >= 1 })
	time.Sleep(50 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
	if got := e.srv.Stats().WatchRequests; got <= watches {
		t.Errorf("watch requests = %d after the drop, want more than %d", got, watches)
	}
	if got := e.metric("authwatch_stream_reconnects_total", "reason", "error"); got < 1 {
		t.Errorf("reconnects{reason=error} = %v, want >= 1", got)
	}
}

func TestRelabelAndReadinessReadNothingTwice(t *testing.T) {
	e := newEnv(t)
	pod := e.runningPod("api-1", "cri://a")
	log := e.srv.Log("cri://a")
	want := numbered("line", 15)
	base := time.Now()
	writeLines(log, base, want[:5])
	e.start(testConfig(), nil)
	e.waitFor("5 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 5 })
	opened := e.metric("authwatch_streams_opened_total")

	// Readiness flips and repeated updates open nothing.
	pod.Status.ContainerStatuses[0].Ready = false
	e.srv.UpdatePod(pod)
	pod.Status.ContainerStatuses[0].Ready = true
	e.srv.UpdatePod(pod)
	e.srv.UpdatePod(pod)
	writeLines(log, base.Add(time.Second), want[5:10])
	e.waitFor("10 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 10 })
	if got := e.metric("authwatch_streams_opened_total"); got != opened {
		t.Errorf("streams opened = %v after readiness changes, want %v", got, opened)
	}

	// Relabelled out of the selector and back: the stream resumes.
	pod.Labels = map[string]string{"app": "other"}
	e.srv.UpdatePod(pod)
	e.waitFor("the stream stopped", 10*time.Second, func() bool { return e.srv.Stats().OpenLogs == 0 })
	writeLines(log, base.Add(2*time.Second), want[10:])
	pod.Labels = map[string]string{"app": "api"}
	e.srv.UpdatePod(pod)
	e.waitFor("15 lines", 10*time.Second, func() bool { return e.got.count("cri://a") >= 15 })
	time.Sleep(100 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://a"), want)
}
