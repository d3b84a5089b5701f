package alerting

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/slacktest"
)

// Delivered runs after each Slack request, once Export shows the
// thread's ts, so a checkpoint written there keeps a restart from
// posting the parent again.
func TestDeliveredSeesThreadInExport(t *testing.T) {
	srv := slacktest.New(testToken, testHookSecret, "alerts")
	defer srv.Close()
	var mu sync.Mutex
	var calls, withTS int
	var h *harness
	h = newHarness(t, Config{Slack: slackConfig(t, srv)}, func(o *Options) {
		o.Delivered = func(context.Context) {
			st := h.d.Export()
			mu.Lock()
			defer mu.Unlock()
			calls++
			for _, th := range st.Threads {
				if th.TS != "" {
					withTS++
				}
			}
		}
	})
	h.start(t)

	in := sampleIncident("shop", "Deployment/api", 1)
	h.d.Notify(incident.Event{Transition: incident.Opened, Incident: in, Time: t0})
	waitFor(t, "the parent and Delivered", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls == 1
	})

	mu.Lock()
	defer mu.Unlock()
	if withTS != 1 {
		t.Errorf("Export in Delivered held %d threads with a ts, want 1", withTS)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("Slack got %d messages, want 1", n)
	}
}
