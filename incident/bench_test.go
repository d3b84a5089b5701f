package incident

import (
	"fmt"
	"testing"
	"time"

	"github.com/authwatch/authwatch/rules"
)

// BenchmarkObserveOpenIncident measures the cost of one match that lands
// in an incident that is already firing, the common case during an
// outage.
func BenchmarkObserveOpenIncident(b *testing.B) {
	e, err := New(Options{Config: DefaultConfig(), Mask: func(t []byte) []byte { return t }})
	if err != nil {
		b.Fatal(err)
	}
	m := match(rules.TokenExpired, "shop", "Deployment/api", `ERROR GET /api/orders returned 401 {"detail":"Token is expired"}`)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		e.Observe(m, now)
	}
}

// BenchmarkObserveManyWorkloads spreads matches over 1,000 workloads with
// a Tick every 1,000 matches, as a storm does.
func BenchmarkObserveManyWorkloads(b *testing.B) {
	e, err := New(Options{Config: DefaultConfig(), Mask: func(t []byte) []byte { return t }})
	if err != nil {
		b.Fatal(err)
	}
	ms := make([]*rules.Match, 1000)
	for i := range ms {
		ms[i] = match(rules.AuthFailure, "shop", fmt.Sprintf("Deployment/w%04d", i), "HTTP 401 Unauthorized")
	}
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		e.Observe(ms[i%len(ms)], now)
		i++
		if i%1000 == 0 {
			e.Tick(now)
		}
	}
}

// BenchmarkObserveCountOnly measures a match that no threshold policy
// selects (the errors policy only counts).
func BenchmarkObserveCountOnly(b *testing.B) {
	e, err := New(Options{Config: DefaultConfig(), Mask: func(t []byte) []byte { return t }})
	if err != nil {
		b.Fatal(err)
	}
	m := match(rules.Error, "shop", "Deployment/api", "ERROR db timeout")
	b.ReportAllocs()
	for b.Loop() {
		e.Observe(m, t0)
	}
}
