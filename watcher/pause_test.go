package watcher

import (
	"testing"
	"time"
)

// A checkpoint taken while the watcher is paused includes exactly the
// lines handled before the pause: a watcher started from it reads the
// rest, each line once.
func TestPauseHoldsResumePoints(t *testing.T) {
	e := newEnv(t)
	e.runningPod("api-0", "cri://p")
	l := e.srv.Log("cri://p")
	texts := numbered("line", 400)
	base := time.Now().Add(-time.Second)
	writeLines(l, base, texts[:100])
	e.start(testConfig(), nil)
	e.waitFor("the first lines", 10*time.Second, func() bool { return e.got.count("cri://p") >= 50 })

	resume := e.w.Pause()
	handled := e.got.count("cri://p")
	writeLines(l, base.Add(100*time.Millisecond), texts[100:200])
	time.Sleep(200 * time.Millisecond)
	if n := e.got.count("cri://p"); n != handled {
		t.Errorf("%d lines handled while paused, want none", n-handled)
	}
	checkpoint, err := e.w.MarshalCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	resume()
	e.waitFor("the lines after the pause", 10*time.Second, func() bool { return e.got.count("cri://p") == 200 })
	e.stop()

	writeLines(l, base.Add(200*time.Millisecond), texts[200:])
	e.start(testConfig(), checkpoint)
	e.waitFor("the lines after the checkpoint", 10*time.Second, func() bool { return e.got.count("cri://p") >= 400-handled })
	time.Sleep(200 * time.Millisecond)
	assertExactlyOnce(t, e.got.texts("cri://p"), texts[handled:])
}
