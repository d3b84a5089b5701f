package watcher

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Stream states, the values of the state label of authwatch_streams.
const (
	stateQueued     = "queued"
	stateConnecting = "connecting"
	stateStreaming  = "streaming"
	stateBackoff    = "backoff"
)

// Reasons a stream was reopened, the values of the reason label of
// authwatch_stream_reconnects_total.
const (
	reasonEOF          = "eof"
	reasonError        = "error"
	reasonStall        = "stall"
	reasonMaxAge       = "max_age"
	reasonTimeSlice    = "time_slice"
	reasonKubeletError = "kubelet_error"
	reasonRestart      = "container_restart"
)

// Reasons a line was dropped, the values of the reason label of
// authwatch_log_lines_dropped_total.
const dropKubeletText = "kubelet_error_text"

type metrics struct {
	lines         *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	truncated     prometheus.Counter
	deduplicated  prometheus.Counter
	streams       *prometheus.GaugeVec
	reconnects    *prometheus.CounterVec
	streamErrors  *prometheus.CounterVec
	resumeGaps    prometheus.Counter
	futureLines   prometheus.Counter
	readLag       prometheus.Histogram
	streamsOpened prometheus.Counter
	streamsDone   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_log_lines_total",
			Help: "Log lines read and passed to the matcher, by namespace and workload.",
		}, []string{"namespace", "workload"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_log_lines_dropped_total",
			Help: "Lines read but not passed to the matcher, by reason.",
		}, []string{"reason"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_log_lines_truncated_total",
			Help: "Lines longer than the line cap, passed on truncated.",
		}),
		deduplicated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_log_lines_deduplicated_total",
			Help: "Lines served again after a reopen and skipped because they were delivered before.",
		}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authwatch_streams",
			Help: "Container log streams by state (queued streams wait for capacity).",
		}, []string{"state"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_stream_reconnects_total",
			Help: "Log streams reopened, by the reason the previous one ended.",
		}, []string{"reason"}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_stream_errors_total",
			Help: "Errors opening or reading log streams, by kind.",
		}, []string{"kind"}),
		resumeGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_stream_resume_gaps_suspected_total",
			Help: "Reopens where the kubelet no longer served the lines before the resume point, or a container instance was replaced before it was read, so lines may be missing.",
		}),
		futureLines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_log_lines_clock_skew_total",
			Help: "Lines whose timestamp was more than one second after the time they were received (node clock ahead of this process).",
		}),
		readLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "authwatch_log_line_read_lag_seconds",
			Help:    "Time from a line's runtime timestamp to its receipt; large values on a live stream mean lag or clock skew.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		streamsOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_streams_opened_total",
			Help: "Log stream requests opened successfully.",
		}),
		streamsDone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authwatch_streams_finished_total",
			Help: "Container instances read to their end (finished, replaced or deleted).",
		}),
	}
	for _, s := range []string{stateQueued, stateConnecting, stateStreaming, stateBackoff} {
		m.streams.WithLabelValues(s)
	}
	for _, r := range []string{reasonEOF, reasonError, reasonStall, reasonMaxAge, reasonTimeSlice, reasonKubeletError, reasonRestart} {
		m.reconnects.WithLabelValues(r)
	}
	for _, k := range []string{"open", "read", reasonKubeletError} {
		m.streamErrors.WithLabelValues(k)
	}
	m.dropped.WithLabelValues(dropKubeletText)
	for _, c := range []prometheus.Collector{m.lines, m.dropped, m.truncated, m.deduplicated, m.streams,
		m.reconnects, m.streamErrors, m.resumeGaps, m.futureLines, m.readLag, m.streamsOpened, m.streamsDone} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
