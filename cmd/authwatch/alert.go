package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/checkpoint"
	"github.com/authwatch/authwatch/rules"
)

func newAlertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alert",
		Short: "Send or preview a sample incident through the configured alerting channels",
	}
	cmd.AddCommand(newAlertTestCmd(), newAlertPreviewCmd())
	return cmd
}

func newAlertTestCmd() *cobra.Command {
	var configFile string
	var timeout time.Duration
	var resolve bool
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Send a sample incident to every configured Slack channel, Alertmanager and webhook",
		Long: "test sends a made-up incident in namespace authwatch-test through the alerting section " +
			"of the config file, waits for every delivery, and prints the result per channel. " +
			"It exits 1 when a delivery failed or timed out.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if cfg.Alerting.Slack == nil && cfg.Alerting.Alertmanager == nil && len(cfg.Alerting.Webhooks) == 0 {
				return &exitError{code: exitUsage, err: errors.New("no alerting channel configured: add alerting.slack, alerting.alertmanager or alerting.webhooks to the config file")}
			}
			return alertTest(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg.Alerting, timeout, resolve)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "configuration file (YAML) with an alerting section")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for every delivery, retries included")
	cmd.Flags().BoolVar(&resolve, "resolve", true, "also send the resolve, so the test incident closes")
	return cmd
}

func alertTest(ctx context.Context, stdout, stderr io.Writer, cfg alerting.Config, timeout time.Duration, resolve bool) error {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := alerting.New(alerting.Options{Config: cfg, Logger: logger, Registerer: prometheus.NewRegistry(), Version: version})
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	now := time.Now()
	d.Notify(alerting.SampleEvent(incident.Opened, now))
	if resolve {
		d.Notify(alerting.SampleEvent(incident.Resolved, now))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(ctx) })
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !d.Idle() && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	timedOut := ctx.Err() != nil
	cancel()
	wg.Wait()

	results := d.Results()
	failed := timedOut
	for _, ch := range d.Channels() {
		r := results[ch]
		switch {
		case r.Failed > 0:
			failed = true
			fmt.Fprintf(stdout, "%-30s FAILED  %d sent, %d failed: %v\n", ch, r.Sent, r.Failed, r.LastErr)
		case r.Sent == 0:
			fmt.Fprintf(stdout, "%-30s UNUSED  no message routed here\n", ch)
		default:
			fmt.Fprintf(stdout, "%-30s ok      %d sent\n", ch, r.Sent)
		}
	}
	if err := d.Ready(); err != nil {
		failed = true
		fmt.Fprintf(stdout, "readiness: %v\n", err)
	}
	if timedOut {
		return &exitError{code: 1, err: fmt.Errorf("deliveries still pending after %s (see the retry warnings above); raise --timeout or fix the channel", timeout)}
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}

func newAlertPreviewCmd() *cobra.Command {
	var configFile, event string
	cmd := &cobra.Command{
		Use:   "preview",
		Short: "Print the Slack Block Kit messages for a sample incident as JSON, without sending",
		Long: "preview renders the messages that Slack would receive for a sample incident: " +
			"the parent message, and for updated or resolved the thread reply too. " +
			"It reads no credentials. Paste a blocks array into Slack's Block Kit Builder to see it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			t := slices.Index([]string{"", "opened", "updated", "resolved"}, event)
			if t < 1 {
				return &exitError{code: exitUsage, err: fmt.Errorf("invalid --event %q: use opened, updated or resolved", event)}
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			out, err := alerting.Preview(cfg.Alerting, logger, alerting.SampleEvent(incident.Transition(t), time.Now()))
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "configuration file (YAML); its alerting.slack.links appear in the preview")
	cmd.Flags().StringVar(&event, "event", "opened", "transition to render: opened, updated or resolved")
	return cmd
}

// Checkpoint sections of the incident engine and the notifiers.
const (
	checkpointIncidentSection = "incidents"
	checkpointAlertingSection = "alerting"
)

// incidentStage turns matches into incidents and incidents into
// notifications. It is a match sink of the pipeline; Run ticks the
// engine and runs the notifiers.
type incidentStage struct {
	log    *slog.Logger
	engine *incident.Engine
	notify *alerting.Dispatcher
	// alertingYAML is the alerting section in force, so that a reload
	// rebuilds the notifiers only when it changed. Only reload, which
	// reloadConfig calls from one goroutine, reads and writes it.
	alertingYAML []byte

	mu        sync.Mutex // guards consumers
	consumers []func([]incident.Event)

	// delivered is called after each notifier request; see
	// onDelivered.
	delivered atomic.Pointer[func(context.Context)]
}

func newIncidentStage(log *slog.Logger, reg prometheus.Registerer, cfg config) (*incidentStage, error) {
	engine, err := incident.New(incident.Options{Config: cfg.incidentConfig(), Mask: rules.Mask, Registerer: reg})
	if err != nil {
		return nil, err
	}
	s := &incidentStage{log: log.With("component", "incidents"), engine: engine}
	d, err := alerting.New(alerting.Options{Config: cfg.Alerting, Logger: log, Registerer: reg, Version: version,
		Delivered: func(ctx context.Context) {
			if f := s.delivered.Load(); f != nil {
				(*f)(ctx)
			}
		}})
	if err != nil {
		return nil, err
	}
	y, err := yaml.Marshal(cfg.Alerting)
	if err != nil {
		return nil, err
	}
	s.notify, s.alertingYAML = d, y
	return s, nil
}

// onDelivered sets the function called after each notifier request,
// before the next one of the same queue.
func (s *incidentStage) onDelivered(f func(context.Context)) { s.delivered.Store(&f) }

// subscribe adds a consumer of incident events, such as remediation. It
// is called from one goroutine, must not block, and must be added before
// Run.
func (s *incidentStage) subscribe(f func([]incident.Event)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consumers = append(s.consumers, f)
}

func (s *incidentStage) emit(events []incident.Event) {
	if len(events) == 0 {
		return
	}
	for _, ev := range events {
		// Updates come about once a second per firing incident: Debug.
		level := slog.LevelInfo
		if ev.Transition == incident.Updated {
			level = slog.LevelDebug
		}
		s.log.Log(context.Background(), level, "incident transition", "transition", ev.Transition.String(),
			"policy", ev.Incident.Key.Policy, "namespace", ev.Incident.Key.Namespace, "workload", ev.Incident.Key.Workload,
			"incident", ev.Incident.ID, "count", ev.Incident.Count, "folded", ev.Incident.Folded)
	}
	s.notify.Notify(events...)
	s.mu.Lock()
	consumers := s.consumers
	s.mu.Unlock()
	for _, f := range consumers {
		f(events)
	}
}

// HandleMatch implements matchSink.
func (s *incidentStage) HandleMatch(m *rules.Match) {
	s.emit(s.engine.Observe(m, time.Now()))
}

// Run ticks the engine once a second and delivers notifications until
// ctx ends.
func (s *incidentStage) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.notify.Run(ctx) })
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-t.C:
			s.emit(s.engine.Tick(now))
		}
	}
}

// ready reports the Slack credential check.
func (s *incidentStage) ready() error { return s.notify.Ready() }

// reload swaps in the notifiers and policies of cfg, which loadConfig
// has validated. Windows, open incidents, Slack threads and queued
// notifications carry over. The notifiers go first because building them
// reads secret files, the one step that can still fail; on failure
// nothing changes.
func (s *incidentStage) reload(ctx context.Context, cfg config) error {
	y, err := yaml.Marshal(cfg.Alerting)
	if err != nil {
		return err
	}
	if !bytes.Equal(y, s.alertingYAML) {
		if err := s.notify.Reconfigure(ctx, cfg.Alerting); err != nil {
			return err
		}
		s.alertingYAML = y
		s.log.Info("alerting reconfigured", "channels", s.notify.Channels())
	}
	events, err := s.engine.Reconfigure(cfg.incidentConfig(), time.Now())
	if err != nil {
		return err
	}
	s.emit(events)
	return nil
}

// checkpointSectionBudget caps each of the two sections, compressed, so
// that a storm of incidents cannot push the checkpoint ConfigMap past its
// size limit and stop the resume points from being written.
const checkpointSectionBudget = 256 << 10

// restore imports the checkpointed incidents and notifier state, and
// registers both sections for writing.
func (s *incidentStage) restore(store *checkpoint.Store) error {
	if raw := store.Section(checkpointIncidentSection); len(raw) > 0 {
		var snap incident.Snapshot
		if err := decodeSection(raw, &snap); err != nil {
			return fmt.Errorf("checkpoint section %s: %w", checkpointIncidentSection, err)
		}
		dropped, err := s.engine.Import(snap)
		if err != nil {
			return err
		}
		for _, in := range dropped {
			s.log.Warn("checkpointed incident dropped: its policy is gone", "policy", in.Key.Policy, "incident", in.ID)
		}
	}
	if raw := store.Section(checkpointAlertingSection); len(raw) > 0 {
		var st alerting.State
		if err := decodeSection(raw, &st); err != nil {
			return fmt.Errorf("checkpoint section %s: %w", checkpointAlertingSection, err)
		}
		if err := s.notify.Import(st); err != nil {
			return err
		}
	}
	store.Register(checkpointIncidentSection, s.sectionWriter(checkpointIncidentSection,
		func() (any, any) { snap := s.engine.Export(); return snap, snap.Compact() }))
	store.Register(checkpointAlertingSection, s.sectionWriter(checkpointAlertingSection,
		func() (any, any) { st := s.notify.Export(); return st, st.Compact() }))
	return nil
}

// sectionWriter returns a snapshot function that writes the full state
// gzip-compressed, or the compact state when the full one is over the
// budget. Over budget even when compact, it returns an error, so the
// checkpoint keeps the section's previous content and still writes the
// other sections.
func (s *incidentStage) sectionWriter(name string, states func() (full, compact any)) checkpoint.SnapshotFunc {
	var compacted atomic.Bool
	return func() ([]byte, error) {
		full, compact := states()
		b, err := encodeSection(full)
		if err != nil || len(b) <= checkpointSectionBudget {
			if err == nil && compacted.CompareAndSwap(true, false) {
				s.log.Info("checkpoint section back to full size", "section", name, "bytes", len(b))
			}
			return b, err
		}
		size := len(b)
		if b, err = encodeSection(compact); err != nil {
			return nil, err
		}
		if len(b) > checkpointSectionBudget {
			return nil, fmt.Errorf("section %s is %d bytes compressed even without samples, over the %d-byte budget: the previous content is kept, and too many incidents are open for a restart to keep them all",
				name, len(b), checkpointSectionBudget)
		}
		if compacted.CompareAndSwap(false, true) {
			s.log.Warn("checkpoint section over budget, writing it without samples", "section", name, "bytes", size, "budget", checkpointSectionBudget)
		}
		return b, nil
	}
}

// encodeSection returns v as gzip-compressed JSON; log samples compress
// well, which keeps the ConfigMap small.
func encodeSection(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeSection reads a section written by encodeSection, or plain JSON.
func decodeSection(raw []byte, v any) error {
	if len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return err
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, 64<<20)); err != nil {
			return err
		}
	}
	return json.Unmarshal(raw, v)
}
