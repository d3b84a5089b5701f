package alerting

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the delivery metrics shared by all notifiers. The channel
// label is "slack:<channel>", "alertmanager" or "webhook:<name>", all
// from the configuration, so its values are bounded.
type metrics struct {
	notifications *prometheus.CounterVec
	failures      *prometheus.CounterVec
	retries       *prometheus.CounterVec
	queue         *prometheus.GaugeVec
	latency       *prometheus.HistogramVec
	// slackAuth exists only with a Slack bot token, the one credential
	// that authwatch can check. A reload may register it late.
	slackAuthMu sync.Mutex // guards slackAuth
	slackAuth   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_notifications_total",
			Help: "Notifications by channel and result (sent, failed).",
		}, []string{"channel", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_notification_failures_total",
			Help: "Failed notification attempts by channel and reason, retried ones included.",
		}, []string{"channel", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_notification_retries_total",
			Help: "Notification attempts that were retries, by channel.",
		}, []string{"channel"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_notification_queue_length",
			Help: "Notifications waiting for delivery, by channel.",
		}, []string{"channel"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "authwatch_notification_delivery_seconds",
			Help:    "Time from an incident transition to its delivery, by channel.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"channel"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.notifications, m.failures, m.retries, m.queue, m.latency} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("alerting: register metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) initChannel(ch string) {
	m.notifications.WithLabelValues(ch, "sent")
	m.notifications.WithLabelValues(ch, "failed")
	m.retries.WithLabelValues(ch)
	m.queue.WithLabelValues(ch)
	m.latency.WithLabelValues(ch)
}

func (m *metrics) registerSlackAuth(reg prometheus.Registerer) error {
	m.slackAuthMu.Lock()
	defer m.slackAuthMu.Unlock()
	if m.slackAuth != nil {
		return nil // registered by an earlier configuration
	}
	m.slackAuth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "authwatch_slack_auth_ok",
		Help: "1 when the last Slack credential check (auth.test) succeeded, else 0.",
	})
	if err := reg.Register(m.slackAuth); err != nil {
		return fmt.Errorf("alerting: register metrics: %w", err)
	}
	return nil
}

func (m *metrics) setSlackAuth(ok bool) {
	m.slackAuthMu.Lock()
	defer m.slackAuthMu.Unlock()
	if m.slackAuth == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.slackAuth.Set(v)
}
