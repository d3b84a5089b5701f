package main

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Backoff between start-up attempts against an unreachable API server.
const (
	startRetryMin = 500 * time.Millisecond
	startRetryMax = 30 * time.Second
)

// retryWhileUnreachable calls op until it succeeds, fails with an error
// that is not about reaching the API server, or ctx ends (then it returns
// the zero value and nil, and the caller checks ctx). The API server may
// come up after authwatch, so a refused connection, a timeout or an error
// status is retried with jittered exponential backoff and logged at Warn
// with what to check.
func retryWhileUnreachable[T any](ctx context.Context, log *slog.Logger, check string, op func(context.Context) (T, error)) (T, error) {
	var zero T
	delay := startRetryMin
	for attempt := 1; ; attempt++ {
		v, err := op(ctx)
		if err == nil || ctx.Err() != nil {
			return v, nil
		}
		if !isAPIUnreachable(err) {
			return zero, err
		}
		wait := delay/2 + rand.N(delay/2+1)
		log.Warn("api server request failed at start, retrying",
			"err", err, "attempt", attempt, "retry_in", wait, "check", check)
		select {
		case <-ctx.Done():
			return zero, nil
		case <-time.After(wait):
		}
		delay = min(2*delay, startRetryMax)
	}
}

// isAPIUnreachable reports whether err came from talking to the API
// server (a transport error or an error status) rather than from
// authwatch's own configuration or state.
func isAPIUnreachable(err error) bool {
	var status apierrors.APIStatus
	var urlErr *url.Error
	var netErr net.Error
	return errors.As(err, &status) || errors.As(err, &urlErr) || errors.As(err, &netErr)
}

// apiCheckHint names the settings that select the API server, for the
// retry log.
func apiCheckHint(f *runFlags) string {
	hint := "that the API server is up and that --kubeconfig and --context (or watch.kubeconfig and watch.context) select the right cluster"
	if f.kubeconfig != "" || f.context != "" {
		hint += "; in use: --kubeconfig=" + f.kubeconfig + " --context=" + f.context
	}
	return hint
}
