// Package checkpoint keeps authwatch's restart state in a ConfigMap that
// authwatch owns. The state is split into named sections, one data key
// each: the watcher's resume points, and for example open incidents and
// Slack thread ids. Each owner registers a snapshot function; Run writes
// the ConfigMap at a bounded rate when a section changed, and Flush
// writes it once more at shutdown.
package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/authwatch/authwatch/internal/permission"
)

// MaxBytes is the largest state written: a ConfigMap holds at most 1 MiB,
// and the object's metadata needs some of it.
const MaxBytes = 1000 * 1024

// ErrTooLarge reports a state over MaxBytes; it is not written.
var ErrTooLarge = errors.New("checkpoint: state too large for a ConfigMap")

// SnapshotFunc returns the current state of one section. It is called
// from Run's goroutine and must be safe to call concurrently with the
// section's owner.
type SnapshotFunc func() ([]byte, error)

// Options configures a Store. Logger, Registerer, Client, Namespace and
// Name are required.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Client     kubernetes.Interface
	Namespace  string
	Name       string
	// Interval is the minimum time between writes; 0 means 10s.
	Interval time.Duration
}

// Store reads and writes the checkpoint ConfigMap.
type Store struct {
	log      *slog.Logger
	client   kubernetes.Interface
	ns, name string
	interval time.Duration

	writes    *prometheus.CounterVec
	lastWrite prometheus.Gauge
	size      prometheus.Gauge
	perm      *permission.Reporter

	// flushMu keeps one Flush at a time, so writes land in order.
	flushMu sync.Mutex

	mu       sync.Mutex
	cut      func(take func())       // guarded by mu; see SetCut
	loaded   map[string][]byte       // guarded by mu; sections read by Load
	sections map[string]SnapshotFunc // guarded by mu
	written  map[string][]byte       // guarded by mu; what the ConfigMap holds
}

// New checks opts and builds a Store. It does no I/O.
func New(opts Options) (*Store, error) {
	var missing []string
	for name, ok := range map[string]bool{
		"Logger": opts.Logger != nil, "Registerer": opts.Registerer != nil, "Client": opts.Client != nil,
		"Namespace": opts.Namespace != "", "Name": opts.Name != "",
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("checkpoint: missing options %v", missing)
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	s := &Store{
		log:      opts.Logger.With("component", "checkpoint", "configmap", opts.Namespace+"/"+opts.Name),
		client:   opts.Client,
		ns:       opts.Namespace,
		name:     opts.Name,
		interval: opts.Interval,
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authwatch_checkpoint_writes_total",
			Help: "Checkpoint ConfigMap writes by result (success, error, too_large).",
		}, []string{"result"}),
		lastWrite: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authwatch_checkpoint_last_success_timestamp_seconds",
			Help: "Time of the last successful checkpoint write.",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authwatch_checkpoint_bytes",
			Help: "Size of the state in the last checkpoint written or attempted.",
		}),
		loaded:   map[string][]byte{},
		sections: map[string]SnapshotFunc{},
	}
	for _, r := range []string{"success", "error", "too_large"} {
		s.writes.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{s.writes, s.lastWrite, s.size} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("checkpoint: register metrics: %w", err)
		}
	}
	perm, err := permission.New(permission.Options{
		Logger: s.log, Registerer: opts.Registerer,
		Accesses: []permission.Access{
			{Verb: permission.Get, Resource: permission.ConfigMaps},
			{Verb: permission.Create, Resource: permission.ConfigMaps},
			{Verb: permission.Update, Resource: permission.ConfigMaps},
		},
		// Run retries a failed write every interval: log a lasting 403
		// about every ten tries.
		LogInterval: 10 * opts.Interval,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	s.perm = perm
	return s, nil
}

// Load reads the ConfigMap; a missing one is an empty checkpoint.
func (s *Store) Load(ctx context.Context) error {
	cm, err := s.client.CoreV1().ConfigMaps(s.ns).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s.log.Info("no checkpoint yet")
		return nil
	}
	if err != nil {
		s.perm.Report(err, permission.Access{Verb: permission.Get, Resource: permission.ConfigMaps}, s.ns)
		return fmt.Errorf("checkpoint: read configmap %s/%s: %w", s.ns, s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loaded = map[string][]byte{}
	for k, v := range cm.Data {
		s.loaded[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		s.loaded[k] = v
	}
	s.written = maps.Clone(s.loaded)
	s.log.Info("checkpoint loaded", "sections", slices.Sorted(maps.Keys(s.loaded)))
	return nil
}

// Section returns the loaded state of a section, or nil.
func (s *Store) Section(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded[name]
}

// Register adds a section; name must be a valid ConfigMap key, such as
// "watch" or "incidents". Sections loaded but not registered are kept.
func (s *Store) Register(name string, snapshot SnapshotFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sections[name] = snapshot
}

// SetCut makes Flush take the snapshots of all sections inside one call
// of cut, which calls take once. cut holds the sections' owners still,
// so that the sections describe one moment: the watcher's resume points
// and the state built from exactly the lines before them. cut must not
// call Flush.
func (s *Store) SetCut(cut func(take func())) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = cut
}

// Run writes the checkpoint every interval while something changed,
// until ctx ends. Write errors are logged and retried at the next tick.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			err := s.Flush(ctx)
			switch {
			case err == nil || ctx.Err() != nil:
			case apierrors.IsForbidden(err):
				// The permission reporter logged it with the fix, at a
				// bounded rate.
				s.log.Debug("checkpoint write failed, retrying later", "err", err)
			default:
				s.log.Warn("checkpoint write failed, retrying later", "err", err)
			}
		}
	}
}

// Flush snapshots every section and writes the ConfigMap if anything
// changed since the last write. It is safe to call from any goroutine;
// calls run one at a time.
func (s *Store) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()

	s.mu.Lock()
	data := maps.Clone(s.loaded)
	for k, v := range s.written {
		data[k] = v
	}
	var errs []error
	take := func() {
		for name, snap := range s.sections {
			b, err := snap()
			if err != nil {
				errs = append(errs, fmt.Errorf("checkpoint: snapshot section %q: %w", name, err))
				continue
			}
			data[name] = b
		}
	}
	if s.cut != nil {
		s.cut(take)
	} else {
		take()
	}

	changed := len(data) != len(s.written)
	for k, v := range data {
		if !bytes.Equal(s.written[k], v) {
			changed = true
		}
	}
	s.mu.Unlock()
	if !changed {
		return errors.Join(errs...)
	}
	total := 0
	for k, v := range data {
		total += len(k) + len(v)
	}
	s.size.Set(float64(total))
	if total > MaxBytes {
		s.writes.WithLabelValues("too_large").Inc()
		errs = append(errs, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, total, MaxBytes))
		return errors.Join(errs...)
	}
	if err := s.write(ctx, data); err != nil {
		s.writes.WithLabelValues("error").Inc()
		errs = append(errs, err)
		return errors.Join(errs...)
	}
	s.writes.WithLabelValues("success").Inc()
	s.lastWrite.SetToCurrentTime()
	s.mu.Lock()
	s.written = data
	s.mu.Unlock()
	return errors.Join(errs...)
}

func (s *Store) write(ctx context.Context, data map[string][]byte) error {
	cms := s.client.CoreV1().ConfigMaps(s.ns)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.name,
			Namespace: s.ns,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "authwatch"},
		},
		BinaryData: data,
	}
	cur, err := cms.Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			s.perm.Report(err, permission.Access{Verb: permission.Create, Resource: permission.ConfigMaps}, s.ns)
			return fmt.Errorf("checkpoint: create configmap %s/%s: %w", s.ns, s.name, err)
		}
		return nil
	case err != nil:
		s.perm.Report(err, permission.Access{Verb: permission.Get, Resource: permission.ConfigMaps}, s.ns)
		return fmt.Errorf("checkpoint: read configmap %s/%s: %w", s.ns, s.name, err)
	}
	// Only the leader writes, so the read-modify-write keeps the
	// resourceVersion only to fail loudly if another writer appears.
	cm.ResourceVersion = cur.ResourceVersion
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		s.perm.Report(err, permission.Access{Verb: permission.Update, Resource: permission.ConfigMaps}, s.ns)
		return fmt.Errorf("checkpoint: update configmap %s/%s: %w", s.ns, s.name, err)
	}
	return nil
}
