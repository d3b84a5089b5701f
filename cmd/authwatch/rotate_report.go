package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/remediation"
)

// noteSender is the part of *alerting.Dispatcher that rotation reports
// use.
type noteSender interface {
	Note(n alerting.Note)
}

// noteReporter sends rotation reports to Slack as notes. A rotation that
// an incident triggered replies in the incident's thread. A manual or
// proactive rotation, or one whose incident has no thread, posts a
// message of its own, and its later steps reply to that message.
type noteReporter struct {
	notes noteSender
	cfg   remediation.Config
}

// Report implements remediation.Reporter. It only queues the note, so it
// never blocks the rotation.
func (r noteReporter) Report(_ context.Context, rep remediation.Report) error {
	r.notes.Note(rotationNote(rep, r.routeKey(rep)))
	return nil
}

// routeKey returns the namespace and workload that route the report to a
// Slack channel: the incident's, or for a manual or proactive rotation
// the target Secret's namespace and the first workload it restarts.
func (r noteReporter) routeKey(rep remediation.Report) incident.Key {
	if rep.Trigger.Namespace != "" {
		return incident.Key{Namespace: rep.Trigger.Namespace, Workload: rep.Trigger.Workload}
	}
	t, ok := r.cfg.Target(rep.Target)
	if !ok {
		return incident.Key{}
	}
	k := incident.Key{Namespace: t.Secret.Namespace}
	if len(t.Restart) > 0 {
		k.Workload = t.Restart[0].String()
	}
	return k
}

// rotationNote renders one rotation report as a Slack note. The
// rotation ID groups the notes of one rotation, and the final report
// ends the group.
func rotationNote(rep remediation.Report, key incident.Key) alerting.Note {
	prefix := ""
	if rep.DryRun {
		prefix = "[dry run] "
	}
	var text string
	switch {
	// No colon after the target: the redaction reads "token: word" as a
	// secret, and target names often end in "-token".
	case rep.Final && rep.State == remediation.StateFailed:
		text = fmt.Sprintf("%sRotation %s of %s %s at step %s after %s. %s",
			prefix, rep.RotationID, rep.Target, outcomeWords(rep.Outcome), rep.Step, rep.Duration.Round(time.Second), rep.Message)
	case rep.Final:
		text = fmt.Sprintf("%sRotation %s of %s %s in %s. %s",
			prefix, rep.RotationID, rep.Target, outcomeWords(rep.Outcome), rep.Duration.Round(time.Second), rep.Message)
	default:
		text = fmt.Sprintf("%s%s %s: %s", prefix, rep.Step, rep.State, rep.Message)
	}
	var title string
	switch {
	case rep.Trigger.Manual:
		title = fmt.Sprintf("%sToken rotation %s of %s, run by hand", prefix, rep.RotationID, rep.Target)
	case rep.Trigger.Renewal:
		title = fmt.Sprintf("%sToken rotation %s of %s, ahead of the token's expiry", prefix, rep.RotationID, rep.Target)
	default:
		title = fmt.Sprintf("%sToken rotation %s of %s for incident %s", prefix, rep.RotationID, rep.Target, rep.Trigger.IncidentKey)
	}
	n := alerting.Note{Group: rep.RotationID, Key: key, Title: title, Text: text, Last: rep.Final, Time: rep.Time}
	if !rep.Trigger.Manual {
		// A manual rotation reports in a message of its own even when an
		// incident of its target is open.
		n.Incident = rep.Trigger.IncidentKey
	}
	return n
}

// outcomeWords returns the outcome as words, "not verified" for
// not_verified.
func outcomeWords(o remediation.Outcome) string {
	return strings.ReplaceAll(string(o), "_", " ")
}

// reporters sends each report to every reporter in turn.
type reporters []remediation.Reporter

// Report implements remediation.Reporter.
func (rs reporters) Report(ctx context.Context, rep remediation.Report) error {
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.Report(ctx, rep))
	}
	return errors.Join(errs...)
}

// daemonReporter returns the reporter of `authwatch run`: the log, and
// Slack where it is configured.
func daemonReporter(stage *incidentStage, log logReporter, cfg remediation.Config) remediation.Reporter {
	return reporters{log, noteReporter{notes: stage.notify, cfg: cfg}}
}

// manualReportTimeout bounds how long `authwatch rotate` waits for its
// Slack messages after the rotation ended.
const manualReportTimeout = 30 * time.Second

// startManualNotes starts a dispatcher for the Slack reports of a manual
// rotation when the config file configures Slack. The returned function
// waits until the reports are delivered or manualReportTimeout passed,
// then stops the dispatcher; it reports what was left undelivered.
func startManualNotes(ctx context.Context, log *slog.Logger, cfg config) (noteSender, func() error, error) {
	if cfg.Alerting.Slack == nil {
		return nil, func() error { return nil }, nil
	}
	// Only Slack takes notes, so the other channels are left out and
	// nothing else starts.
	ac := alerting.Config{Slack: cfg.Alerting.Slack}
	d, err := alerting.New(alerting.Options{Config: ac, Logger: log, Registerer: prometheus.NewRegistry(), Version: version})
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(runCtx) })
	wait := func() error {
		defer wg.Wait()
		defer cancel()
		deadline := time.NewTimer(manualReportTimeout)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !d.Idle() {
			select {
			case <-deadline.C:
				return fmt.Errorf("slack reports still undelivered after %s; see the warnings above", manualReportTimeout)
			case <-tick.C:
			}
		}
		for ch, r := range d.Results() {
			if r.Failed > 0 {
				return fmt.Errorf("%d slack reports to %s failed: %v", r.Failed, ch, r.LastErr)
			}
		}
		return nil
	}
	return d, wait, nil
}
