// Package watcher follows the logs of Kubernetes containers selected by
// namespace, label and field selectors, and passes every line to a
// Handler exactly once: across reconnects, container restarts, capacity
// time slices and (through a checkpoint) graceful restarts of authwatch
// itself. The limits: the kubelet must still serve the lines, and a line
// may be written at most Config.ResumeMargin before an earlier line of
// the same container.
//
// Pods are discovered with informers. Each container instance, keyed by
// (pod UID, container name, container ID), gets one goroutine that opens
// a pods/log stream with timestamps, reads it, and on any end re-checks
// the pod to decide whether to reopen, read the previous instance, or
// stop. The package knows nothing about matching.
package watcher

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/authwatch/authwatch/internal/permission"
	"github.com/authwatch/authwatch/rules"
)

// Handler receives every line. It is called from many goroutines at once
// (one per stream) and must be safe for that. line.Text is reused after
// the call returns: copy what you keep. A slow handler slows the streams
// that call it, which is the watcher's backpressure: lines wait in the
// kubelet's log files, not in memory. The resume point moves past a line
// only after HandleLine returns, so a checkpoint never claims a line that
// was not handled.
type Handler interface {
	HandleLine(line *rules.Line)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(line *rules.Line)

// HandleLine calls f(line).
func (f HandlerFunc) HandleLine(line *rules.Line) { f(line) }

// LogOpener opens a pods/log stream. The default uses the clientset.
type LogOpener interface {
	OpenLog(ctx context.Context, namespace, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error)
}

type clientLogOpener struct{ client kubernetes.Interface }

func (o clientLogOpener) OpenLog(ctx context.Context, namespace, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	return o.client.CoreV1().Pods(namespace).GetLogs(pod, opts).Stream(ctx)
}

// Options configures a Watcher. Logger, Registerer, Client and Handler are
// required.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Client must have no overall request timeout: log streams stay open
	// for hours.
	Client  kubernetes.Interface
	Handler Handler
	Config  Config
	// DefaultNamespace is watched when Config names no namespace and does
	// not ask for all namespaces.
	DefaultNamespace string
	// Logs overrides how streams are opened; nil uses Client.
	Logs LogOpener
	// Checkpoint is a snapshot from MarshalCheckpoint of an earlier run,
	// or nil.
	Checkpoint []byte
}

func (o *Options) validate() error {
	var missing []string
	if o.Logger == nil {
		missing = append(missing, "Logger")
	}
	if o.Registerer == nil {
		missing = append(missing, "Registerer")
	}
	if o.Client == nil {
		missing = append(missing, "Client")
	}
	if o.Handler == nil {
		missing = append(missing, "Handler")
	}
	if len(missing) > 0 {
		return fmt.Errorf("watcher: missing options %v", missing)
	}
	return o.Config.Validate("watch")
}

// Watcher discovers pods and follows their containers' logs.
type Watcher struct {
	log     *slog.Logger
	cfg     Config
	client  kubernetes.Interface
	logs    LogOpener
	handler Handler
	m       *metrics
	perm    *permission.Reporter
	slots   *slots

	include, exclude []*regexp.Regexp
	namespaces       []string // "" is all namespaces

	start  time.Time
	synced atomic.Bool

	stores []cache.Store // set by Run before the workers start

	// cut is held for reading from HandleLine until the resume point
	// moved past the line, and for writing by Pause.
	cut sync.RWMutex

	mu       sync.Mutex
	streams  map[streamKey]*stream      // guarded by mu
	restored map[streamKey]*savedStream // guarded by mu; checkpointed entries not yet claimed
	pending  map[string]struct{}        // guarded by mu; "namespace/name" of pods to reconcile
	kick     chan struct{}              // capacity 1; signals pending work
}

type streamKey struct {
	podUID      types.UID
	container   string
	containerID string
}

// stream is one container instance. Its goroutine owns the reading; mu
// guards res, which the checkpoint snapshot also reads.
type stream struct {
	key          streamKey
	source       rules.Source
	initialSince time.Time // zero reads the instance from its start
	opened       bool      // set by the stream's goroutine on its first open
	// The rate of the stream's lines, for the stall timeout; only the
	// stream's goroutine uses these.
	lastLine time.Time
	meanGap  time.Duration
	gaps     int
	lines    prometheus.Counter

	mu  sync.Mutex
	res *resumeState

	// Fields below are guarded by Watcher.mu.
	cancel    context.CancelFunc
	running   bool
	gen       int           // counts goroutines started for the stream
	exited    chan struct{} // closed when the latest goroutine returns
	stoppedAt time.Time     // set when the pod left the informer
}

// New checks opts and builds a Watcher; Run starts it.
func New(opts Options) (*Watcher, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("watcher: register metrics: %w", err)
	}
	perm, err := permission.New(permission.Options{
		Logger: opts.Logger.With("component", "watcher"), Registerer: opts.Registerer,
		Accesses:    watcherAccesses(),
		LogInterval: time.Duration(opts.Config.BackoffMax),
	})
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	w := &Watcher{
		log:      opts.Logger.With("component", "watcher"),
		cfg:      opts.Config,
		client:   opts.Client,
		logs:     opts.Logs,
		handler:  opts.Handler,
		m:        m,
		perm:     perm,
		slots:    newSlots(opts.Config.MaxStreams, opts.Config.MaxStreamsPerNode),
		streams:  make(map[streamKey]*stream),
		restored: make(map[streamKey]*savedStream),
		pending:  make(map[string]struct{}),
		kick:     make(chan struct{}, 1),
	}
	if w.logs == nil {
		w.logs = clientLogOpener{client: opts.Client}
	}
	for _, p := range opts.Config.Containers {
		w.include = append(w.include, regexp.MustCompile("^(?:"+p+")$"))
	}
	for _, p := range opts.Config.ExcludeContainers {
		w.exclude = append(w.exclude, regexp.MustCompile("^(?:"+p+")$"))
	}
	switch {
	case opts.Config.AllNamespaces:
		w.namespaces = []string{metav1.NamespaceAll}
	case len(opts.Config.Namespaces) > 0:
		w.namespaces = opts.Config.Namespaces
	default:
		ns := opts.DefaultNamespace
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		w.namespaces = []string{ns}
	}
	if len(opts.Checkpoint) > 0 {
		if err := w.restore(opts.Checkpoint); err != nil {
			// A damaged checkpoint costs repeats, not the daemon.
			w.log.Warn("checkpoint ignored", "err", err)
		}
	}
	return w, nil
}

// Synced reports whether every pod informer has synced; /readyz uses it.
func (w *Watcher) Synced() bool { return w.synced.Load() }

// Run discovers pods and follows their logs until ctx ends. It returns
// after every stream goroutine has stopped, so that a final checkpoint
// taken afterwards covers every handled line.
func (w *Watcher) Run(ctx context.Context) error {
	w.start = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var synced []cache.InformerSynced
	var factories []informers.SharedInformerFactory
	for _, ns := range w.namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(w.client, 0, informers.WithNamespace(ns))
		inf := f.InformerFor(&corev1.Pod{}, func(kubernetes.Interface, time.Duration) cache.SharedIndexInformer {
			return w.podInformer(ns)
		})
		if err := inf.SetWatchErrorHandlerWithContext(w.informerError); err != nil {
			return fmt.Errorf("watcher: set pod watch error handler: %w", err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    w.enqueue,
			UpdateFunc: func(_, obj any) { w.enqueue(obj) },
			DeleteFunc: w.enqueue,
		}); err != nil {
			return fmt.Errorf("watcher: add pod event handler: %w", err)
		}
		w.stores = append(w.stores, inf.GetStore())
		synced = append(synced, inf.HasSynced)
		factories = append(factories, f)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	defer cancel()
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	w.log.Info("watcher started", "namespaces", w.namespaces, "selector", w.cfg.Selector,
		"field_selector", w.cfg.FieldSelector, "max_streams", w.cfg.MaxStreams)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	w.synced.Store(true)
	w.log.Info("pod informers synced")

	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		w.reconcilePending(ctx, &wg)
		select {
		case <-ctx.Done():
			w.log.Debug("watcher stopping")
			return nil
		case <-w.kick:
		case <-sweep.C:
			w.sweep()
		}
	}
}

// The requests that the watcher makes, the series of
// authwatch_api_permission_errors_total that it starts at zero.
func watcherAccesses() []permission.Access {
	return []permission.Access{
		{Verb: permission.List, Resource: permission.Pods},
		{Verb: permission.Watch, Resource: permission.Pods},
		{Verb: permission.Get, Resource: permission.PodLogs},
	}
}

// podInformer builds the pod informer of namespace ns ("" for all) as
// the informer factory does, but reports 403 responses to its list and
// watch requests with the verb that was rejected.
func (w *Watcher) podInformer(ns string) cache.SharedIndexInformer {
	tweak := func(o *metav1.ListOptions) {
		o.LabelSelector = w.cfg.Selector
		o.FieldSelector = w.cfg.FieldSelector
	}
	pods := w.client.CoreV1().Pods(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			list, err := pods.List(ctx, o)
			w.perm.Report(err, permission.Access{Verb: permission.List, Resource: permission.Pods}, ns)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			wi, err := pods.Watch(ctx, o)
			w.perm.Report(err, permission.Access{Verb: permission.Watch, Resource: permission.Pods}, ns)
			return wi, err
		},
	}
	return cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, w.client), &corev1.Pod{},
		cache.SharedIndexInformerOptions{Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}})
}

// informerError leaves 403 responses to the permission reporter, which
// logged them with the fix at a bounded rate, and passes other errors to
// client-go's default handler.
func (w *Watcher) informerError(ctx context.Context, r *cache.Reflector, err error) {
	if apierrors.IsForbidden(err) {
		return
	}
	cache.DefaultWatchErrorHandler(ctx, r, err)
}

func (w *Watcher) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		w.log.Warn("pod event without a key", "err", err)
		return
	}
	w.mu.Lock()
	w.pending[key] = struct{}{}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *Watcher) getPod(key string) *corev1.Pod {
	for _, s := range w.stores {
		obj, ok, err := s.GetByKey(key)
		if err == nil && ok {
			if pod, isPod := obj.(*corev1.Pod); isPod {
				return pod
			}
		}
	}
	return nil
}

func (w *Watcher) reconcilePending(ctx context.Context, wg *sync.WaitGroup) {
	w.mu.Lock()
	keys := make([]string, 0, len(w.pending))
	for k := range w.pending {
		keys = append(keys, k)
	}
	clear(w.pending)
	w.mu.Unlock()
	for _, key := range keys {
		w.reconcile(ctx, wg, key, w.getPod(key))
	}
}

// target is one container instance that a pod status names.
type target struct {
	name, id  string
	startedAt time.Time
}

func (w *Watcher) included(name string) bool {
	if len(w.include) > 0 {
		ok := false
		for _, re := range w.include {
			ok = ok || re.MatchString(name)
		}
		if !ok {
			return false
		}
	}
	for _, re := range w.exclude {
		if re.MatchString(name) {
			return false
		}
	}
	return true
}

func (w *Watcher) targets(pod *corev1.Pod) []target {
	cutoff := w.start.Add(-time.Duration(w.cfg.Since))
	var out []target
	add := func(statuses []corev1.ContainerStatus) {
		for i := range statuses {
			st := &statuses[i]
			if !w.included(st.Name) {
				continue
			}
			if st.ContainerID != "" {
				out = append(out, target{name: st.Name, id: st.ContainerID, startedAt: startedAt(st.State)})
			}
			// A previous instance that ended inside the --since window was
			// not read by anyone: read it too.
			if lt := st.LastTerminationState.Terminated; lt != nil && lt.ContainerID != "" &&
				lt.ContainerID != st.ContainerID && !lt.FinishedAt.Time.Before(cutoff) {
				out = append(out, target{name: st.Name, id: lt.ContainerID, startedAt: lt.StartedAt.Time})
			}
		}
	}
	add(pod.Status.InitContainerStatuses)
	add(pod.Status.ContainerStatuses)
	add(pod.Status.EphemeralContainerStatuses)
	return out
}

// statusIDs returns the container IDs that pod's status names, current
// and previous.
func statusIDs(pod *corev1.Pod) map[string]bool {
	ids := map[string]bool{}
	for _, list := range [][]corev1.ContainerStatus{
		pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses,
	} {
		for i := range list {
			ids[list[i].ContainerID] = true
			if lt := list[i].LastTerminationState.Terminated; lt != nil {
				ids[lt.ContainerID] = true
			}
		}
	}
	return ids
}

func startedAt(s corev1.ContainerState) time.Time {
	switch {
	case s.Running != nil:
		return s.Running.StartedAt.Time
	case s.Terminated != nil:
		return s.Terminated.StartedAt.Time
	}
	return time.Time{}
}

// reconcile starts a stream for every new container instance of pod and
// stops the streams of a pod that is gone (pod nil) or was replaced by a
// pod with the same name.
func (w *Watcher) reconcile(ctx context.Context, wg *sync.WaitGroup, key string, pod *corev1.Pod) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.streams {
		if s.source.Namespace == ns && s.source.Pod == name && (pod == nil || s.key.podUID != pod.UID) {
			if s.running {
				s.cancel()
				s.running = false
			}
			if s.stoppedAt.IsZero() {
				s.stoppedAt = time.Now()
			}
		}
	}
	if pod == nil {
		return
	}
	// A finished instance that the status no longer names is never read
	// again: forget it, so that a crash-looping pod does not fill the map
	// and the checkpoint.
	named := statusIDs(pod)
	for k, s := range w.streams {
		if k.podUID == pod.UID && !s.running && !named[k.containerID] && s.isDone() {
			delete(w.streams, k)
		}
	}
	workload := workloadOf(pod)
	for _, t := range w.targets(pod) {
		k := streamKey{podUID: pod.UID, container: t.name, containerID: t.id}
		s, ok := w.streams[k]
		if ok && (s.running || s.isDone()) {
			continue
		}
		if !ok {
			s = &stream{
				key: k,
				source: rules.Source{
					Namespace: pod.Namespace, Pod: pod.Name, PodUID: string(pod.UID),
					Container: t.name, ContainerID: t.id, Node: pod.Spec.NodeName, Workload: workload,
				},
				res:   newResumeState(),
				lines: w.m.lines.WithLabelValues(pod.Namespace, workload),
			}
			cutoff := w.start.Add(-time.Duration(w.cfg.Since))
			if t.startedAt.IsZero() || t.startedAt.Before(cutoff) {
				s.initialSince = cutoff
			}
			if saved, ok := w.restored[k]; ok {
				saved.apply(s.res)
				delete(w.restored, k)
			}
			w.streams[k] = s
			if s.isDone() {
				continue
			}
		}
		sctx, cancel := context.WithCancel(ctx)
		s.cancel = cancel
		s.running = true
		s.stoppedAt = time.Time{}
		s.gen++
		gen, prev, exited := s.gen, s.exited, make(chan struct{})
		s.exited = exited
		wg.Go(func() {
			defer close(exited)
			defer cancel()
			// A stopped goroutine of the same stream may still be handing
			// over its last line; the resume state must see it first.
			if prev != nil {
				<-prev
			}
			w.follow(sctx, s)
			w.mu.Lock()
			if s.gen == gen {
				s.running = false
			}
			w.mu.Unlock()
		})
	}
}

func (s *stream) isDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res.done
}

// retention is how long the resume state of a pod that left the informer
// is kept, so that a pod relabelled out of and back into the selector
// resumes instead of being read again.
const retention = 10 * time.Minute

func (w *Watcher) sweep() {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, s := range w.streams {
		if !s.running && !s.stoppedAt.IsZero() && now.Sub(s.stoppedAt) > retention {
			delete(w.streams, k)
		}
	}
	if w.synced.Load() && now.Sub(w.start) > retention {
		clear(w.restored)
	}
}

// ErrCheckpointVersion reports a checkpoint written by an incompatible
// version.
var ErrCheckpointVersion = errors.New("watcher: unsupported checkpoint version")

// checkpointVersion is the format of MarshalCheckpoint.
const checkpointVersion = 1

// checkpointEntries is the budget of replay window entries in a
// checkpoint, shared by all streams. An entry takes 20 bytes of hash and
// timestamp that gzip cannot shrink, so the watch section stays near
// 400 KB and leaves room in the ConfigMap's 1 MiB for the incident and
// alerting sections (256 KiB each). Each stream gets at least
// minCheckpointEntries, so past checkpointEntries/minCheckpointEntries
// streams the section grows beyond that.
const (
	checkpointEntries    = 20000
	minCheckpointEntries = 16
)

type savedStreams struct {
	Version int           `json:"version"`
	Streams []savedStream `json:"streams"`
}

type savedStream struct {
	PodUID      string    `json:"pod_uid"`
	Namespace   string    `json:"namespace"`
	Pod         string    `json:"pod"`
	Container   string    `json:"container"`
	ContainerID string    `json:"container_id"`
	Done        bool      `json:"done,omitempty"`
	Last        time.Time `json:"last,omitzero"`
	Floor       time.Time `json:"floor,omitzero"`
	Window      []byte    `json:"window,omitempty"`
}

func (s *savedStream) key() streamKey {
	return streamKey{podUID: types.UID(s.PodUID), container: s.Container, containerID: s.ContainerID}
}

func (s *savedStream) apply(res *resumeState) {
	res.done = s.Done
	res.last = s.Last
	res.floor = s.Floor
	if m, ok := decodeWindow(s.Window); ok {
		res.window = m
	}
}

// Pause waits until no HandleLine call is in progress and keeps new
// ones from starting until resume is called. Between the two, the
// resume points stay where they are and every line they include has
// been handed to HandleLine, so the caller can take a checkpoint of the
// handler's state that matches them exactly. HandleLine must not wait
// for Pause's caller.
func (w *Watcher) Pause() (resume func()) {
	w.cut.Lock()
	return w.cut.Unlock
}

// MarshalCheckpoint returns the resume points of all known streams as
// gzip-compressed JSON, for Options.Checkpoint of a later run. Lines are
// included once HandleLine has returned for them.
func (w *Watcher) MarshalCheckpoint() ([]byte, error) {
	out := savedStreams{Version: checkpointVersion}
	w.mu.Lock()
	perStream := max(minCheckpointEntries, checkpointEntries/max(1, len(w.streams)))
	for _, s := range w.streams {
		s.mu.Lock()
		if s.res.done || !s.res.last.IsZero() {
			win, floor := s.res.encodeWindow(perStream)
			out.Streams = append(out.Streams, savedStream{
				PodUID: string(s.key.podUID), Namespace: s.source.Namespace, Pod: s.source.Pod,
				Container: s.key.container, ContainerID: s.key.containerID,
				Done: s.res.done, Last: s.res.last, Floor: floor, Window: win,
			})
		}
		s.mu.Unlock()
	}
	for _, saved := range w.restored {
		out.Streams = append(out.Streams, *saved)
	}
	w.mu.Unlock()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(out); err != nil {
		return nil, fmt.Errorf("watcher: encode checkpoint: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("watcher: compress checkpoint: %w", err)
	}
	return buf.Bytes(), nil
}

func (w *Watcher) restore(data []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("watcher: decompress checkpoint: %w", err)
	}
	var in savedStreams
	if err := json.NewDecoder(zr).Decode(&in); err != nil {
		return fmt.Errorf("watcher: decode checkpoint: %w", err)
	}
	if in.Version != checkpointVersion {
		return fmt.Errorf("%w %d", ErrCheckpointVersion, in.Version)
	}
	for i := range in.Streams {
		s := &in.Streams[i]
		if len(s.Window)%entrySize != 0 {
			return fmt.Errorf("watcher: checkpoint stream %s/%s %s: window of %d bytes is not a multiple of %d",
				s.Namespace, s.Pod, s.Container, len(s.Window), entrySize)
		}
		w.restored[s.key()] = s
	}
	w.log.Info("checkpoint restored", "streams", len(in.Streams))
	return nil
}
