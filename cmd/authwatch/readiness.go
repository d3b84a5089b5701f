package main

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/authwatch/authwatch/internal/leader"
	"github.com/authwatch/authwatch/watcher"
)

// readiness decides what /readyz of `authwatch run` reports. The daemon
// loads and validates its configuration before it serves /readyz, so a
// replica that serves it has a configuration.
type readiness struct {
	// elector is nil when leader election is off, and then this replica
	// always leads.
	elector *leader.Elector
	// watcher is set by the leader once it has built the watcher.
	watcher atomic.Pointer[watcher.Watcher]
	// stage reports the incident stage's readiness (the Slack
	// credential check).
	stage func() error
}

// check returns the /readyz body, or why this replica is not ready. A
// standby is ready: it serves its endpoints and can take over, and a
// standby that stayed unready would stall every rolling update of a
// Deployment, whose new pods wait as standbys while an old pod leads. The
// leader is ready once its pod informers have synced and the incident
// stage is ready.
func (r *readiness) check() (string, error) {
	w := r.watcher.Load()
	if w == nil {
		if r.elector != nil && !r.elector.IsLeader() {
			return r.standbyDetail(), nil
		}
		return "", errors.New("pod informers have not synced: this replica is reading the checkpoint or starting the watcher")
	}
	if !w.Synced() {
		return "", errors.New("pod informers have not synced")
	}
	if r.stage != nil {
		if err := r.stage(); err != nil {
			return "", err
		}
	}
	if r.elector != nil {
		return "ok: leading, Lease " + r.elector.Lease(), nil
	}
	return "ok", nil
}

func (r *readiness) standbyDetail() string {
	detail := fmt.Sprintf("ok: standby, waiting for the Lease %s", r.elector.Lease())
	if holder := r.elector.Holder(); holder != "" {
		detail += " held by " + holder
	}
	return detail
}
