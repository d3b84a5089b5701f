package remediation

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rotations     *prometheus.CounterVec
	lastSuccess   *prometheus.GaugeVec
	duration      *prometheus.HistogramVec
	expiry        *prometheus.GaugeVec
	circuitOpen   *prometheus.GaugeVec
	reportsFailed prometheus.Counter
	dropped       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, targets []string) (*metrics, error) {
	m := &metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_token_rotations_total",
			Help: "Token rotations by target and result (succeeded, failed, not_verified, rejected, dry_run, lease_lost).",
		}, []string{"target", "result"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_token_rotation_last_success_timestamp_seconds",
			Help: "Unix time of the last verified rotation of the target.",
		}, []string{"target"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "authwatch_token_rotation_duration_seconds",
			Help:    "Time from the start of a rotation to its outcome.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200},
		}, []string{"target"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_token_expiry_timestamp_seconds",
			Help: "Unix time of the exp claim of the JWT held in the target's Secret.",
		}, []string{"target"}),
		circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_token_rotation_circuit_open",
			Help: "1 while the circuit breaker stops automatic rotation of the target.",
		}, []string{"target"}),
		reportsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_token_rotation_reports_failed_total",
			Help: "Rotation reports that the reporter could not deliver.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_token_rotation_triggers_dropped_total",
			Help: "Rotation triggers dropped because the trigger queue was full.",
		}),
	}
	for _, c := range []prometheus.Collector{m.rotations, m.lastSuccess, m.duration, m.expiry, m.circuitOpen, m.reportsFailed, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		for _, o := range allOutcomes {
			m.rotations.WithLabelValues(t, string(o))
		}
		m.circuitOpen.WithLabelValues(t)
	}
	return m, nil
}
