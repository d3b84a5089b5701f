package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/kubetest"
	"github.com/authwatch/authwatch/internal/slacktest"
)

// buildAuthwatch builds the authwatch binary into a temporary directory.
func buildAuthwatch(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "authwatch")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemonProcess is one `authwatch run` process of the kill test.
type daemonProcess struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	// lines is the sum of authwatch_log_lines_total at the last scrape.
	lines int
}

var linesTotalRE = regexp.MustCompile(`(?m)^authwatch_log_lines_total\{[^}]*\} (\d+)$`)

// scrapeLines returns the sum of authwatch_log_lines_total, or -1.
func scrapeLines(addr string) int {
	code, body := get("http://" + addr + "/metrics")
	if code != 200 {
		return -1
	}
	n := 0
	for _, m := range linesTotalRE.FindAllStringSubmatch(body, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// TestRunSIGKILLRestart kills a real authwatch process several times
// while 20 containers log. Each checkpoint is a consistent cut: the
// incidents restored are exactly those of the lines before the restored
// resume points, so every line is counted once in them. The line
// metrics still count again each line after the last periodic write.
// A checkpoint is also written after each Slack request, so a restart
// posts no parent again, except the one request in flight at a kill.
func TestRunSIGKILLRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; run without -short")
	}
	bin := buildAuthwatch(t)
	srv, err := kubetest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	slack := slacktest.New("xoxb-kill-test-token", "hooksecret", "alerts")
	t.Cleanup(slack.Close)

	dir := t.TempDir()
	kubeconfig := writeTestFile(t, dir, "kubeconfig", string(srv.Kubeconfig("ns")))
	cfg := writeTestFile(t, dir, "config.yaml", `
policies:
  - name: token-expired
    select: {categories: [token_expired]}
    threshold: 1
    window: 1m
    resolve_after: 10m
storm:
  workloads: 0
alerting:
  slack:
    token_file: `+writeTestFile(t, dir, "token", "xoxb-kill-test-token\n")+`
    channel: "#alerts"
    api_url: `+slack.APIURL()+`
    message_interval: 1ms
`)

	const containers = 20
	logs := make([]*kubetest.Log, containers)
	start := time.Now()
	for i := range containers {
		name := fmt.Sprintf("w%02d-5f7c9d8b4-x%02d", i, i)
		pod := kubetest.NewPod("ns", name, strconv.Itoa(i+1), map[string]string{"app": "load", "pod-template-hash": "5f7c9d8b4"}, "app")
		pod.OwnerReferences = ownerRS(fmt.Sprintf("w%02d-5f7c9d8b4", i))
		id := fmt.Sprintf("cri://c%02d", i)
		kubetest.SetRunning(pod, "app", id, start.Add(-time.Second), false)
		srv.AddPod(pod)
		logs[i] = srv.Log(id)
	}

	// Each container writes one matching line every 10ms until stopped.
	var written [containers]int
	var wmu sync.Mutex
	writeCtx, stopWriting := context.WithCancel(context.Background())
	var writers sync.WaitGroup
	for i := range containers {
		writers.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-writeCtx.Done():
					return
				case <-tick.C:
				}
				logs[i].Write(time.Now(), fmt.Sprintf("calling the billing API: jwt expired (n=%d)", n))
				wmu.Lock()
				written[i]++
				wmu.Unlock()
			}
		})
	}
	t.Cleanup(func() { stopWriting(); writers.Wait() })

	var procs []*daemonProcess
	startProc := func(interval string) *daemonProcess {
		p := &daemonProcess{addr: freeAddr(t), stderr: &syncBuffer{}}
		p.cmd = exec.Command(bin, "run", "--kubeconfig", kubeconfig, "--listen-address", p.addr,
			"--checkpoint-namespace", "authwatch", "--checkpoint-interval", interval,
			"--log-format", "json", "--config", cfg, "-n", "ns", "-l", "app=load")
		p.cmd.Stderr = p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
		procs = append(procs, p)
		waitUntil(t, "/readyz ok", func() bool { code, _ := get("http://" + p.addr + "/readyz"); return code == 200 })
		return p
	}
	// run lets p read for d, scraping its line count, then signals it.
	run := func(p *daemonProcess, d time.Duration, sig syscall.Signal) {
		end := time.Now().Add(d)
		for {
			if n := scrapeLines(p.addr); n >= 0 {
				p.lines = n
			}
			if !time.Now().Before(end) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
	}

	// The first process posts the 20 parents and is killed before any
	// periodic checkpoint write. The next ones write one every second and
	// die between two writes.
	first := startProc("1h")
	waitUntil(t, "20 Slack parents", func() bool { return len(parents(slack)) >= containers })
	run(first, 500*time.Millisecond, syscall.SIGKILL)
	for _, d := range []time.Duration{2300 * time.Millisecond, 1700 * time.Millisecond, 2900 * time.Millisecond} {
		run(startProc("1s"), d, syscall.SIGKILL)
	}
	last := startProc("1s")
	stopWriting()
	writers.Wait()
	wmu.Lock()
	total := 0
	for _, n := range written {
		total += n
	}
	wmu.Unlock()
	// Let the last process read everything, then stop it gracefully so
	// that it writes its final checkpoint.
	waitUntil(t, "the last process to read every line", func() bool {
		n := scrapeLines(last.addr)
		time.Sleep(300 * time.Millisecond)
		return n >= 0 && n == scrapeLines(last.addr)
	})
	run(last, 0, syscall.SIGTERM)
	if code := last.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("graceful stop exited %d; log:\n%s", code, last.stderr.String())
	}

	counted := incidentTotal(t, srv)
	scraped := 0
	for _, p := range procs {
		scraped += p.lines
	}
	ps := parents(slack)
	byWorkload := map[string]int{}
	for _, m := range ps {
		byWorkload[workloadOf(m.Text)]++
	}
	t.Logf("written %d lines in %d containers; incident counts %d (%+d); lines counted across %d processes at their last scrape %d (%d read again); Slack parents %d for %d workloads",
		total, containers, counted, counted-total, len(procs), scraped, scraped-total, len(ps), len(byWorkload))

	if counted != total {
		t.Errorf("incident counts = %d, want the %d lines written", counted, total)
	}
	if len(byWorkload) != containers {
		t.Errorf("Slack parents for %d workloads, want %d: %v", len(byWorkload), containers, byWorkload)
	}
	// Slack has no idempotency key: a parent in flight when the process
	// died is posted again, at most one per kill.
	if extra := len(ps) - len(byWorkload); extra > len(procs)-1 {
		t.Errorf("Slack parents posted again = %d, want at most %d (one in flight per kill): %v", extra, len(procs)-1, byWorkload)
	}
	for _, p := range procs {
		if strings.Contains(p.stderr.String(), "xoxb-kill-test-token") {
			t.Error("the Slack token appears in the log")
		}
	}
}

// parents returns the Slack messages that start a thread.
func parents(s *slacktest.Server) []slacktest.Message {
	var out []slacktest.Message
	for _, m := range s.Messages() {
		if m.ThreadTS == "" {
			out = append(out, m)
		}
	}
	return out
}

var workloadRE = regexp.MustCompile(`w\d\d`)

func workloadOf(text string) string { return workloadRE.FindString(text) }

// incidentTotal sums the match counts of the checkpointed incidents.
func incidentTotal(t *testing.T, srv *kubetest.Server) int {
	t.Helper()
	cm := srv.ConfigMap("authwatch", "authwatch-checkpoint")
	if cm == nil || len(cm.BinaryData[checkpointIncidentSection]) == 0 {
		t.Fatal("no incident section in the checkpoint")
	}
	var snap incident.Snapshot
	if err := decodeSection(cm.BinaryData[checkpointIncidentSection], &snap); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tr := range snap.Tracks {
		n += tr.Incident.Count
	}
	return n
}
