package watcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/authwatch/authwatch/internal/checkpoint"
)

func TestPodChurnLeavesNothingOpen(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEnv(t)
	e.start(testConfig(), nil)
	duration := time.Minute
	if testing.Short() {
		duration = 3 * time.Second
	}
	var live []string
	deadline := time.Now().Add(duration)
	for i := 0; time.Now().Before(deadline); i++ {
		name := fmt.Sprintf("churn-%d", i)
		id := "cri://" + name
		e.runningPod(name, id)
		e.srv.Log(id).Write(time.Now(), "hello from "+name)
		live = append(live, name)
		if len(live) > 3 {
			e.srv.DeletePod("ns", live[0])
			live = live[1:]
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range live {
		e.srv.DeletePod("ns", name)
	}
	e.waitFor("no open log stream", 10*time.Second, func() bool { return e.srv.Stats().OpenLogs == 0 })
	for _, state := range []string{"queued", "connecting", "streaming", "backoff"} {
		e.waitFor("no stream in state "+state, 5*time.Second, func() bool { return e.metric("authwatch_streams", "state", state) == 0 })
	}
	if got := e.metric("authwatch_streams_opened_total"); got < 10 {
		t.Errorf("streams opened = %v, want at least 10", got)
	}
	e.stop()
	// Closing the server ends the client's connection goroutines too.
	e.srv.Close()
}

// TestRestartFromCheckpoint stops the watcher while 20 containers log and
// starts a new one from the checkpoint: no line is lost or repeated.
func TestRestartFromCheckpoint(t *testing.T) {
	e := newEnv(t)
	const containers = 20
	base := time.Now()
	for i := range containers {
		e.runningPod(fmt.Sprintf("api-%d", i), fmt.Sprintf("cri://c%d", i))
	}
	ctx, stopWriters := context.WithCancel(context.Background())
	defer stopWriters()
	var writers sync.WaitGroup
	written := make([][]string, containers)
	for i := range containers {
		log := e.srv.Log(fmt.Sprintf("cri://c%d", i))
		writers.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				text := fmt.Sprintf("c%d line %d", i, n)
				// Several lines share each timestamp, and stderr lags stdout.
				ts := base.Add(time.Duration(n/3) * 7 * time.Millisecond)
				if n%5 == 0 {
					ts = ts.Add(-300 * time.Millisecond)
				}
				log.Write(ts, text)
				written[i] = append(written[i], text)
				time.Sleep(3 * time.Millisecond)
			}
		})
	}

	cpOpts := func(reg prometheus.Registerer) checkpoint.Options {
		return checkpoint.Options{Logger: testLogger(t), Registerer: reg, Client: e.client,
			Namespace: "authwatch", Name: "authwatch-checkpoint", Interval: 100 * time.Millisecond}
	}
	var delivered [containers][]string
	for run := range 3 {
		reg := prometheus.NewRegistry()
		store, err := checkpoint.New(cpOpts(reg))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.start(testConfig(), store.Section("watch"))
		store.Register("watch", e.w.MarshalCheckpoint)
		runCtx, stopStore := context.WithCancel(context.Background())
		storeDone := make(chan error, 1)
		go func() { storeDone <- store.Run(runCtx) }()
		time.Sleep(700 * time.Millisecond)
		if run == 2 {
			stopWriters()
			writers.Wait()
			deadline := time.Now().Add(10 * time.Second)
			for i := range containers {
				id := fmt.Sprintf("cri://c%d", i)
				n := len(written[i]) - len(delivered[i])
				for e.got.count(id) < n && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if got := e.got.count(id); got != n {
					t.Errorf("%s: last run delivered %d lines, want %d", id, got, n)
				}
			}
		}
		// A graceful stop: streams end, then the last checkpoint.
		e.stop()
		stopStore()
		if err := <-storeDone; err != nil {
			t.Fatal(err)
		}
		if err := store.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := range containers {
			delivered[i] = append(delivered[i], e.got.texts(fmt.Sprintf("cri://c%d", i))...)
		}
		if run > 0 && e.metric("authwatch_log_lines_deduplicated_total") == 0 {
			t.Errorf("run %d skipped no line: the resume did not overlap", run)
		}
	}
	for i := range containers {
		assertExactlyOnce(t, delivered[i], written[i])
	}
	if cm := e.srv.ConfigMap("authwatch", "authwatch-checkpoint"); cm == nil || len(cm.BinaryData["watch"]) == 0 {
		t.Errorf("checkpoint ConfigMap missing or without a watch section: %v", cm)
	}
}
