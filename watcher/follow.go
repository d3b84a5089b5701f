package watcher

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/rules"
)

// openMode is the way the next request reads a container instance.
type openMode int

const (
	modeGone     openMode = iota // the instance can no longer be read
	modeFollow                   // running: follow it
	modeFinal                    // finished and current: read to the end
	modePrevious                 // replaced by a newer instance: previous=true
)

// resolve decides from the pod's status how the instance (name, id) can
// be read now. It follows the kubelet's rules: without previous=true it
// serves the current instance, or the last terminated one when the
// current has not started; with previous=true it serves the last
// terminated one.
func resolve(pod *corev1.Pod, name, id string) openMode {
	if pod == nil {
		return modeGone
	}
	for _, list := range [][]corev1.ContainerStatus{
		pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses,
	} {
		for i := range list {
			st := &list[i]
			if st.Name != name {
				continue
			}
			if st.ContainerID == id {
				if st.State.Running != nil {
					return modeFollow
				}
				return modeFinal
			}
			if lt := st.LastTerminationState.Terminated; lt != nil && lt.ContainerID == id {
				return modePrevious
			}
			return modeGone
		}
	}
	return modeGone
}

// Causes that end a stream from the watchdog timers.
var (
	errStall     = errors.New("stream stalled")
	errMaxAge    = errors.New("stream reached its maximum age")
	errTimeSlice = errors.New("time slice over")
)

// outcome describes the end of one request.
type outcome struct {
	reason    string // a reconnect reason
	delivered int
	eof       bool // the server ended the body cleanly
	err       error
}

// follow reads one container instance until it is fully read, gone, or
// ctx ends.
func (w *Watcher) follow(ctx context.Context, s *stream) {
	log := w.log.With("namespace", s.source.Namespace, "pod", s.source.Pod,
		"container", s.source.Container, "container_id", s.source.ContainerID)
	state := ""
	setState := func(next string) {
		if state != "" {
			w.m.streams.WithLabelValues(state).Dec()
		}
		if next != "" {
			w.m.streams.WithLabelValues(next).Inc()
		}
		state = next
	}
	defer setState("")

	podKey := s.source.Namespace + "/" + s.source.Pod
	backoff := time.Duration(0)
	var lastErr string
	prevMode, prevReason := modeGone, ""
	for attempt := 0; ; attempt++ {
		pod := w.getPod(podKey)
		if pod != nil && pod.UID != s.key.podUID {
			pod = nil
		}
		mode := resolve(pod, s.key.container, s.key.containerID)
		if prevReason != "" {
			// The end of a followed stream is counted once its cause is
			// known: a restart of the container, or the stream's own end.
			if prevMode == modeFollow && mode == modePrevious {
				prevReason = reasonRestart
			}
			w.m.reconnects.WithLabelValues(prevReason).Inc()
		}
		if mode == modeGone {
			if pod != nil && prevMode == modeFollow {
				// The pod is still there but the instance is neither current
				// nor the previous one: it restarted twice before it was read.
				w.m.resumeGaps.Inc()
				log.Warn("container instance replaced before it was read to the end; lines may be missing")
			}
			w.finish(s, log, "instance gone")
			return
		}
		setState(stateConnecting)
		if err := w.slots.acquire(ctx, s.source.Node, func() { setState(stateQueued) }); err != nil {
			return
		}
		setState(stateConnecting)
		out := w.readOnce(ctx, s, mode, log, setState)
		w.slots.release(s.source.Node)
		if ctx.Err() != nil {
			log.Debug("stream stopped")
			return
		}
		if mode != modeFollow && out.eof {
			w.finish(s, log, "read to the end")
			return
		}
		prevMode, prevReason = mode, out.reason
		if out.reason == reasonTimeSlice {
			prevReason = ""
			log.Debug("stream yielded its slot")
			continue
		}
		// A quiet stream that stalled or aged out is not failing.
		if out.delivered > 0 || out.reason == reasonMaxAge || out.reason == reasonStall || (out.eof && attempt == 0) {
			backoff = 0
		} else {
			backoff = nextBackoff(backoff, time.Duration(w.cfg.BackoffMin), time.Duration(w.cfg.BackoffMax))
		}
		if out.err != nil && out.err.Error() != lastErr && !apierrors.IsForbidden(out.err) {
			// Log a retry only when its error changes. The permission
			// reporter logged a 403 once for all streams of the namespace.
			lastErr = out.err.Error()
			log.Warn("stream ended, retrying", "reason", out.reason, "err", out.err, "backoff", backoff)
		} else {
			log.Debug("stream ended, reopening", "reason", out.reason, "backoff", backoff)
		}
		if backoff > 0 {
			setState(stateBackoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func nextBackoff(prev, lo, hi time.Duration) time.Duration {
	d := max(lo, prev*2)
	d = min(d, hi)
	// Full jitter over the upper half keeps retries of many streams apart.
	return d/2 + rand.N(d/2+1)
}

func (w *Watcher) finish(s *stream, log *slog.Logger, reason string) {
	s.mu.Lock()
	s.res.done = true
	s.mu.Unlock()
	w.m.streamsDone.Inc()
	log.Info("stream finished", "reason", reason)
}

// readOnce opens one request and reads it to its end.
func (w *Watcher) readOnce(ctx context.Context, s *stream, mode openMode, log *slog.Logger, setState func(string)) outcome {
	opts := &corev1.PodLogOptions{
		Container:  s.key.container,
		Follow:     mode == modeFollow,
		Previous:   mode == modePrevious,
		Timestamps: true,
	}
	s.mu.Lock()
	since := s.res.sinceTime()
	if since.IsZero() {
		since = s.initialSince
	}
	s.res.startReplay()
	s.mu.Unlock()
	if !since.IsZero() {
		opts.SinceTime = &metav1.Time{Time: since}
	}

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body, err := w.logs.OpenLog(sctx, s.source.Namespace, s.source.Pod, opts)
	if err != nil {
		w.m.streamErrors.WithLabelValues("open").Inc()
		w.perm.Report(err, permission.Access{Verb: permission.Get, Resource: permission.PodLogs}, s.source.Namespace)
		// A NotFound or BadRequest usually means that the pod or the
		// instance went away after the status check; the next check
		// decides whether to retry.
		return outcome{reason: reasonError, err: err}
	}
	defer body.Close()
	w.m.streamsOpened.Inc()
	if !s.opened {
		s.opened = true
		log.Info("stream started", "follow", opts.Follow, "previous", opts.Previous, "since", since)
	} else {
		log.Debug("stream reopened", "follow", opts.Follow, "previous", opts.Previous, "since", since)
	}
	setState(stateStreaming)

	// The watchdog ends the request by cancelling sctx with a cause.
	var lastRead, stallAfter atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	stallAfter.Store(int64(w.stallTimeout(s)))
	var watchdog sync.WaitGroup
	watchdog.Go(func() { w.watchdog(sctx, cancel, s.source.Node, &lastRead, &stallAfter) })
	defer func() {
		cancel(nil)
		watchdog.Wait()
	}()

	margin := time.Duration(w.cfg.ResumeMargin)
	lr := newLineReader(body, w.cfg.MaxLineBytes)
	line := rules.Line{Source: s.source}
	var raw rawLine
	out := outcome{}
	var kubeletText bool
	for {
		err := lr.next(&raw)
		if err != nil {
			return w.ended(sctx, err, out, kubeletText)
		}
		now := time.Now()
		lastRead.Store(now.UnixNano())
		if raw.noTimestamp {
			w.m.dropped.WithLabelValues(dropKubeletText).Inc()
			w.m.streamErrors.WithLabelValues(reasonKubeletError).Inc()
			if !kubeletText {
				// Mask before cutting, so that no token is cut where the masking
				// would miss it.
				log.Warn("kubelet error text in log stream", "text", string(limitText(rules.Mask(raw.text), 256)))
			}
			kubeletText = true
			continue
		}
		if raw.partial && mode == modeFollow {
			// The rest of the line may still come: the reopen reads it whole.
			return outcome{reason: reasonEOF, delivered: out.delivered, eof: true}
		}

		id := lineID{nanos: raw.time.UnixNano(), hash: hashText(raw.text, raw.truncated)}
		s.mu.Lock()
		dup := s.res.seen(id)
		gapSuspected := !dup && s.res.gapSuspected()
		s.mu.Unlock()
		if dup {
			w.m.deduplicated.Inc()
			continue
		}
		if gapSuspected {
			w.m.resumeGaps.Inc()
			log.Warn("resume gap suspected: lines before the resume point were not served again", "since", since)
		}

		line.Text = raw.text
		line.Time = raw.time
		line.Truncated = raw.truncated
		w.cut.RLock()
		w.handler.HandleLine(&line)
		s.mu.Lock()
		s.res.record(id, raw.time, margin)
		s.mu.Unlock()
		w.cut.RUnlock()
		s.observeGap(raw.time)
		stallAfter.Store(int64(w.stallTimeout(s)))
		out.delivered++
		s.lines.Inc()
		if raw.truncated {
			w.m.truncated.Inc()
		}
		lag := now.Sub(raw.time)
		if lag < -time.Second {
			w.m.futureLines.Inc()
		}
		w.m.readLag.Observe(max(lag, 0).Seconds())
	}
}

// ended classifies the end of a request.
func (w *Watcher) ended(sctx context.Context, err error, out outcome, kubeletText bool) outcome {
	switch cause := context.Cause(sctx); {
	case errors.Is(cause, errStall):
		out.reason, out.err = reasonStall, cause
	case errors.Is(cause, errMaxAge):
		out.reason = reasonMaxAge
	case errors.Is(cause, errTimeSlice):
		out.reason = reasonTimeSlice
	case errors.Is(err, io.EOF):
		// Kubelet error text means the body did not end with the log.
		out.eof = !kubeletText
		out.reason = reasonEOF
		if kubeletText {
			out.reason = reasonKubeletError
		}
	default:
		w.m.streamErrors.WithLabelValues("read").Inc()
		out.reason, out.err = reasonError, err
		if kubeletText {
			out.reason = reasonKubeletError
		}
	}
	return out
}

func limitText(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// minGaps is how many gaps between lines a stream must have shown before
// its stall timeout drops below StallMax.
const minGaps = 4

// observeGap updates the stream's mean gap between lines. It uses the
// lines' own timestamps, so the container's write rate counts, not the
// bursts in which a reopened stream catches up. Only the stream's
// goroutine calls it.
func (s *stream) observeGap(ts time.Time) {
	if !s.lastLine.IsZero() {
		if d := ts.Sub(s.lastLine); d >= 0 {
			if s.gaps == 0 {
				s.meanGap = d
			} else {
				s.meanGap += (d - s.meanGap) / 8
			}
			s.gaps++
		}
	}
	if ts.After(s.lastLine) {
		s.lastLine = ts
	}
}

// stallTimeout returns how long the stream may stay silent: StallFactor
// mean gaps, within [StallMin, StallMax], and StallMax until the rate is
// known.
func (w *Watcher) stallTimeout(s *stream) time.Duration {
	lo, hi := time.Duration(w.cfg.StallMin), time.Duration(w.cfg.StallMax)
	if s.gaps < minGaps {
		return hi
	}
	return min(max(time.Duration(w.cfg.StallFactor*float64(s.meanGap)), lo), hi)
}

// watchdog ends a request through cancel when the stream stalls, reaches
// MaxStreamAge, or should yield its slot to a waiting stream. lastRead is
// the time of the latest line in Unix nanoseconds and stallAfter the
// current stall timeout; the reader updates both.
func (w *Watcher) watchdog(ctx context.Context, cancel context.CancelCauseFunc, node string, lastRead, stallAfter *atomic.Int64) {
	stall := time.NewTimer(time.Duration(w.cfg.StallMin))
	defer stall.Stop()
	age := time.NewTimer(time.Duration(w.cfg.MaxStreamAge))
	defer age.Stop()
	var slice <-chan time.Time
	if w.cfg.MaxStreams > 0 || w.cfg.MaxStreamsPerNode > 0 {
		t := time.NewTicker(time.Duration(w.cfg.TimeSlice))
		defer t.Stop()
		slice = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-stall.C:
			idle := time.Duration(time.Now().UnixNano() - lastRead.Load())
			limit := time.Duration(stallAfter.Load())
			if idle >= limit {
				cancel(errStall)
				return
			}
			stall.Reset(limit - idle)
		case <-age.C:
			cancel(errMaxAge)
			return
		case <-slice:
			if w.slots.contended(node) {
				cancel(errTimeSlice)
				return
			}
		}
	}
}
