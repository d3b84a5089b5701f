// Package leader elects one authwatch replica with a coordination.k8s.io
// Lease, so that only the leader streams logs, notifies and rotates.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/authwatch/authwatch/internal/permission"
)

// Options configures an Elector.
type Options struct {
	Client kubernetes.Interface
	// Namespace and Name locate the Lease.
	Namespace string
	Name      string
	// Identity names this replica in the Lease; the pod name is usual.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod default to client-go's
	// usual 15s, 10s and 2s.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	Logger        *slog.Logger
	// Registerer, when set, counts the Lease requests that the API server
	// rejects with 403 Forbidden in authwatch_api_permission_errors_total
	// and logs each with the RBAC fix. With nil, only client-go logs them.
	Registerer prometheus.Registerer
}

// Elector campaigns for the Lease and runs a function while it leads.
type Elector struct {
	opts    Options
	logger  *slog.Logger
	perm    *permission.Reporter // nil without Options.Registerer
	leading atomic.Bool
	le      atomic.Pointer[leaderelection.LeaderElector]
}

// New checks the options. It starts no goroutines.
func New(opts Options) (*Elector, error) {
	var errs []error
	if opts.Client == nil {
		errs = append(errs, errors.New("leader: Options.Client is nil"))
	}
	if opts.Logger == nil {
		errs = append(errs, errors.New("leader: Options.Logger is nil"))
	}
	for field, v := range map[string]string{"Namespace": opts.Namespace, "Name": opts.Name, "Identity": opts.Identity} {
		if v == "" {
			errs = append(errs, fmt.Errorf("leader: Options.%s is empty", field))
		}
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = 10 * time.Second
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = 2 * time.Second
	}
	if opts.RenewDeadline >= opts.LeaseDuration {
		errs = append(errs, fmt.Errorf("leader: RenewDeadline %s must be shorter than LeaseDuration %s", opts.RenewDeadline, opts.LeaseDuration))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	e := &Elector{opts: opts, logger: opts.Logger.With("component", "leader", "lease", opts.Namespace+"/"+opts.Name)}
	if opts.Registerer != nil {
		perm, err := permission.New(permission.Options{Logger: e.logger, Registerer: opts.Registerer, Accesses: leaseAccesses})
		if err != nil {
			return nil, fmt.Errorf("leader: %w", err)
		}
		e.perm = perm
	}
	return e, nil
}

// IsLeader reports whether this replica holds an unexpired Lease now.
// Writers check it right before each write.
func (e *Elector) IsLeader() bool {
	le := e.le.Load()
	return e.leading.Load() && le != nil && le.IsLeader() && le.Check(0) == nil
}

// Lease returns the Lease's "namespace/name".
func (e *Elector) Lease() string { return e.opts.Namespace + "/" + e.opts.Name }

// Holder returns the identity of the Lease holder that this replica saw
// last, or "" before it has read the Lease.
func (e *Elector) Holder() string {
	if le := e.le.Load(); le != nil {
		return le.GetLeader()
	}
	return ""
}

// Run campaigns for the Lease until ctx ends. While this replica leads,
// lead runs with a context that ends when the leadership ends. When the
// leadership is lost, Run waits for lead to return and campaigns again.
// When ctx ends, Run waits for lead to return before it releases the
// Lease, so no write of lead can follow another replica's takeover. An
// error from lead ends Run with that error.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	for {
		err := e.term(ctx, lead)
		if err != nil || ctx.Err() != nil {
			return err
		}
		e.logger.Warn("leadership lost, campaigning again", "identity", e.opts.Identity)
	}
}

// term campaigns once and leads until the leadership or ctx ends.
func (e *Elector) term(ctx context.Context, lead func(ctx context.Context) error) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, e.opts.Namespace, e.opts.Name,
		e.opts.Client.CoreV1(), e.opts.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: e.opts.Identity})
	if err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	if e.perm != nil {
		lock = &reportingLock{Interface: lock, perm: e.perm, namespace: e.opts.Namespace}
	}

	var (
		mu       sync.Mutex
		closed   bool // no lead starts once set; guarded by mu
		wg       sync.WaitGroup
		leadErr  error // guarded by mu
		electCtx context.Context
		cancel   context.CancelFunc
	)
	// The election outlives ctx until lead has returned, so that the
	// Lease is released only after the last write.
	electCtx, cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   e.opts.LeaseDuration,
		RenewDeadline:   e.opts.RenewDeadline,
		RetryPeriod:     e.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leCtx context.Context) {
				mu.Lock()
				defer mu.Unlock()
				if closed {
					return
				}
				e.leading.Store(true)
				e.logger.Info("leading", "identity", e.opts.Identity)
				leadCtx, stop := context.WithCancel(ctx)
				unlink := context.AfterFunc(leCtx, stop)
				wg.Go(func() {
					defer stop()
					defer unlink()
					if err := lead(leadCtx); err != nil && leadCtx.Err() == nil {
						mu.Lock()
						leadErr = err
						mu.Unlock()
						cancel()
					}
				})
			},
			OnStoppedLeading: func() {
				e.leading.Store(false)
			},
			OnNewLeader: func(identity string) {
				if identity != e.opts.Identity {
					e.logger.Info("leader observed", "leader", identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	e.le.Store(le)

	stopWatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		wg.Wait()
		cancel()
	})
	defer stopWatch()

	le.Run(electCtx)
	e.leading.Store(false)
	mu.Lock()
	closed = true
	mu.Unlock()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	return leadErr
}
