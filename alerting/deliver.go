package alerting

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Backoff bounds the waits between retries of a failed delivery: the
// first retry waits Min, each further one twice as long, up to Max.
type Backoff struct {
	Min, Max time.Duration
}

func (b Backoff) orDefault() Backoff {
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max < b.Min {
		b.Max = max(time.Minute, b.Min)
	}
	return b
}

// verdict classifies a failed attempt.
type verdict struct {
	// reason is a bounded metric label such as rate_limited or
	// channel_not_found.
	reason string
	retry  bool
	// wait overrides the backoff, for a Retry-After.
	wait time.Duration
}

// attempt runs send until it succeeds, fails with an error that a retry
// cannot fix, runs out of maxAttempts (0 means no limit) or ctx ends. It
// counts every outcome under channel. It returns nil on success, and
// ctx.Err() when ctx ended, so the caller keeps the job for the
// checkpoint.
func (d *Dispatcher) attempt(ctx context.Context, channel string, since time.Time, maxAttempts int,
	send func(ctx context.Context) error, classify func(error) verdict,
) error {
	backoff := d.backoff.Min
	lastReason := ""
	for n := 1; ; n++ {
		if n > 1 {
			d.metrics.retries.WithLabelValues(channel).Inc()
		}
		err := send(ctx)
		if err == nil {
			d.metrics.notifications.WithLabelValues(channel, "sent").Inc()
			d.metrics.latency.WithLabelValues(channel).Observe(d.now().Sub(since).Seconds())
			d.record(channel, nil)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = d.redactor.Error(err)
		v := classify(err)
		d.metrics.failures.WithLabelValues(channel, v.reason).Inc()
		if !v.retry || (maxAttempts > 0 && n >= maxAttempts) {
			d.metrics.notifications.WithLabelValues(channel, "failed").Inc()
			d.record(channel, err)
			if v.retry {
				d.logger.Error("notification failed after retries", "channel", channel, "attempts", n, "reason", v.reason, "err", err)
			}
			return err
		}
		wait := v.wait
		if wait <= 0 {
			wait = backoff
			backoff = min(backoff*2, d.backoff.Max)
		}
		if v.reason != lastReason {
			d.logger.Warn("notification failed, retrying", "channel", channel, "attempt", n, "reason", v.reason, "retry_in", wait, "err", err)
			lastReason = v.reason
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// queue is a FIFO whose consumer peeks, works and only then pops, so an
// item in flight at shutdown stays for the checkpoint.
type queue[T any] struct {
	mu     sync.Mutex // guards items
	items  []T
	signal chan struct{}
	onLen  func(int)
}

func newQueue[T any](onLen func(int)) *queue[T] {
	return &queue[T]{signal: make(chan struct{}, 1), onLen: onLen}
}

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	n := len(q.items)
	q.mu.Unlock()
	q.onLen(n)
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// peek waits for the first item; false means ctx ended.
func (q *queue[T]) peek(ctx context.Context) (T, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			v := q.items[0]
			q.mu.Unlock()
			return v, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero T
			return zero, false
		case <-q.signal:
		}
	}
}

func (q *queue[T]) pop() {
	q.mu.Lock()
	var zero T
	q.items[0] = zero
	q.items = q.items[1:]
	n := len(q.items)
	q.mu.Unlock()
	q.onLen(n)
}

func (q *queue[T]) snapshot() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]T(nil), q.items...)
}

func (q *queue[T]) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// logOnce logs an error at Error level the first time its key is seen,
// and at Debug after that, so a permanent misconfiguration does not flood
// the log while every occurrence is still counted.
type logOnce struct {
	mu   sync.Mutex // guards seen
	seen map[string]bool
}

func (l *logOnce) first(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	if l.seen[key] {
		return false
	}
	l.seen[key] = true
	return true
}

func (l *logOnce) log(logger *slog.Logger, key, msg string, args ...any) {
	if l.first(key) {
		logger.Error(msg, args...)
		return
	}
	logger.Debug(msg, args...)
}
