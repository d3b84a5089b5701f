// Command standin serves the API server stand-in from internal/kubetest
// with a synthetic load for bench/watch.sh: a number of running pods
// whose containers write log lines at a fixed total rate, about 1% of
// them authentication failures. Each line's timestamp is the time it was
// written, so authwatch's match lag histogram measures written→counted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/authwatch/authwatch/internal/kubetest"
)

func main() {
	streams := flag.Int("streams", 500, "number of pods, one container each")
	rate := flag.Int("rate", 50000, "total lines per second over all streams")
	duration := flag.Duration("duration", 90*time.Second, "how long to generate lines")
	kubeconfig := flag.String("kubeconfig", "", "write a kubeconfig for the stand-in to this file (required)")
	tick := flag.Duration("tick", 50*time.Millisecond, "lines are written in batches this often")
	flag.Parse()
	if *kubeconfig == "" || *streams <= 0 || *rate <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*streams, *rate, *duration, *tick, *kubeconfig); err != nil {
		log.Fatal(err)
	}
}

func run(streams, rate int, duration, tick time.Duration, kubeconfig string) error {
	srv, err := kubetest.Start()
	if err != nil {
		return err
	}
	defer srv.Close()
	logs := make([]*kubetest.Log, streams)
	start := time.Now()
	for i := range streams {
		name := fmt.Sprintf("load-%d", i)
		pod := kubetest.NewPod("bench", name, "1", map[string]string{"app": "load"}, "app")
		pod.Spec.NodeName = fmt.Sprintf("node-%d", i%10)
		id := fmt.Sprintf("cri://%064d", i)
		kubetest.SetRunning(pod, "app", id, start.Add(-time.Minute), false)
		srv.AddPod(pod)
		logs[i] = srv.Log(id)
		// Keep memory flat: the kubelet rotates logs too.
		logs[i].SetMaxEntries(4096)
	}
	if err := os.WriteFile(kubeconfig, srv.Kubeconfig("bench"), 0o600); err != nil {
		return err
	}
	fmt.Printf("standin ready at %s with %d streams\n", srv.Addr(), streams)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	t := time.NewTicker(tick)
	defer t.Stop()
	perTick := float64(rate) * tick.Seconds() / float64(streams)
	owed := make([]float64, streams)
	var seq int64
	written := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Printf("standin wrote %d lines in %s\n", written, time.Since(start).Round(time.Second))
			return nil
		case <-t.C:
		}
		now := time.Now()
		for i, l := range logs {
			owed[i] += perTick
			n := int(owed[i])
			owed[i] -= float64(n)
			if n == 0 {
				continue
			}
			batch := make([]kubetest.Entry, n)
			for j := range batch {
				seq++
				batch[j] = kubetest.Entry{Time: now, Text: lineText(seq)}
			}
			l.Append(batch...)
			written += n
		}
	}
}

// lineText returns a realistic mix: access log lines, JSON application
// lines and, for 1 in 100, an authentication failure.
func lineText(seq int64) []byte {
	switch {
	case seq%100 == 0:
		return fmt.Appendf(nil, `{"level":"error","ts":%d,"msg":"calling billing: 401 Unauthorized: token expired","request_id":"r-%d"}`, seq, seq)
	case seq%3 == 0:
		return fmt.Appendf(nil, `{"level":"info","ts":%d,"msg":"order processed","order_id":%d,"duration_ms":%d}`, seq, seq, seq%250)
	default:
		return fmt.Appendf(nil, `10.0.%d.%d - - "GET /api/v1/items/%d HTTP/1.1" 200 %d "-" "python-requests/2.31"`, seq%256, seq%200, seq, 512+seq%4096)
	}
}
