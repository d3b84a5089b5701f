package main

import (
	"log/slog"

	"k8s.io/klog/v2"
)

// routeKlog sends the log output of client-go, which logs through klog
// (leader election, reflectors, client warnings), to log, so that
// `--log-format json` writes only JSON records. klog keeps this logger in
// its own global state; the daemon calls this once at start.
func routeKlog(log *slog.Logger) {
	klog.SetSlogLogger(log.With("component", "client-go"))
}
