package watcher

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// Config is the `watch` section of the configuration file. Flags of
// `authwatch run` override its fields. The zero value is not usable:
// start from DefaultConfig.
type Config struct {
	// Kubeconfig and Context select the cluster; both empty means
	// $KUBECONFIG or ~/.kube/config, or the in-cluster configuration in
	// a pod. A relative Kubeconfig is relative to the configuration file.
	Kubeconfig string `yaml:"kubeconfig" config:"file"`
	Context    string `yaml:"context"`

	// Namespaces to watch; empty with AllNamespaces false means the
	// namespace of the kubeconfig context.
	Namespaces    []string `yaml:"namespaces"`
	AllNamespaces bool     `yaml:"all_namespaces"`
	// Selector is a label selector evaluated by the API server.
	Selector      string `yaml:"selector"`
	FieldSelector string `yaml:"field_selector"`
	// Containers and ExcludeContainers are RE2 patterns matched against
	// the whole container name. Empty Containers includes every container.
	Containers        []string `yaml:"containers"`
	ExcludeContainers []string `yaml:"exclude_containers"`
	// Since bounds how far back a container is read when it is first
	// seen: from the later of its start time and the watcher's start
	// minus Since. Resume points from a checkpoint take precedence.
	Since Duration `yaml:"since"`

	// MaxStreams and MaxStreamsPerNode cap open log streams; 0 means no
	// cap. Streams over the cap wait in a queue and are served in turn.
	MaxStreams        int `yaml:"max_streams"`
	MaxStreamsPerNode int `yaml:"max_streams_per_node"`
	// TimeSlice is how long a stream keeps its slot while others wait.
	TimeSlice Duration `yaml:"time_slice"`

	// MaxLineBytes caps the text of one line; longer lines are truncated
	// and counted.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// ResumeMargin is how far before the last delivered timestamp a
	// reopened stream starts. It must cover the timestamp skew between
	// interleaved stdout and stderr lines.
	ResumeMargin Duration `yaml:"resume_margin"`
	// StallMin and StallMax bound the stall timeout: StallFactor times
	// the mean gap between the stream's line timestamps, or StallMax
	// until a few gaps are known.
	StallMin    Duration `yaml:"stall_min"`
	StallMax    Duration `yaml:"stall_max"`
	StallFactor float64  `yaml:"stall_factor"`
	// MaxStreamAge reopens a stream before the kubelet's streaming
	// connection limit (4h by default) cuts it.
	MaxStreamAge Duration `yaml:"max_stream_age"`
	// BackoffMin and BackoffMax bound the jittered exponential backoff
	// between failed attempts on one stream.
	BackoffMin Duration `yaml:"backoff_min"`
	BackoffMax Duration `yaml:"backoff_max"`

	// QPS and Burst limit requests to the API server.
	QPS   float32 `yaml:"qps"`
	Burst int     `yaml:"burst"`
}

// DefaultMaxLineBytes is the default cap on one line, the same as scan's.
const DefaultMaxLineBytes = 1 << 20

// DefaultConfig returns the defaults that decoding overlays.
func DefaultConfig() Config {
	return Config{
		Since:        Duration(5 * time.Minute),
		MaxStreams:   200,
		TimeSlice:    Duration(time.Minute),
		MaxLineBytes: DefaultMaxLineBytes,
		ResumeMargin: Duration(5 * time.Second),
		StallMin:     Duration(30 * time.Second),
		StallMax:     Duration(5 * time.Minute),
		StallFactor:  20,
		MaxStreamAge: Duration(3*time.Hour + 45*time.Minute),
		BackoffMin:   Duration(500 * time.Millisecond),
		BackoffMax:   Duration(30 * time.Second),
		QPS:          20,
		Burst:        40,
	}
}

// Validate reports every invalid field, each with its YAML path under
// prefix (for example "watch").
func (c *Config) Validate(prefix string) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	if c.AllNamespaces && len(c.Namespaces) > 0 {
		bad("all_namespaces", "cannot be combined with namespaces %q; set one of them", c.Namespaces)
	}
	for i, ns := range c.Namespaces {
		if ns == "" {
			bad(fmt.Sprintf("namespaces[%d]", i), "empty namespace name")
		}
	}
	if _, err := labels.Parse(c.Selector); err != nil {
		bad("selector", "invalid label selector %q: %v", c.Selector, err)
	}
	if _, err := fields.ParseSelector(c.FieldSelector); err != nil {
		bad("field_selector", "invalid field selector %q: %v", c.FieldSelector, err)
	}
	for i, p := range c.Containers {
		if _, err := regexp.Compile(p); err != nil {
			bad(fmt.Sprintf("containers[%d]", i), "invalid pattern %q: %v", p, err)
		}
	}
	for i, p := range c.ExcludeContainers {
		if _, err := regexp.Compile(p); err != nil {
			bad(fmt.Sprintf("exclude_containers[%d]", i), "invalid pattern %q: %v", p, err)
		}
	}
	nonNegative := func(field string, d Duration) {
		if d < 0 {
			bad(field, "negative duration %s", time.Duration(d))
		}
	}
	positive := func(field string, d Duration) {
		if d <= 0 {
			bad(field, "must be positive, got %s", time.Duration(d))
		}
	}
	nonNegative("since", c.Since)
	nonNegative("resume_margin", c.ResumeMargin)
	positive("time_slice", c.TimeSlice)
	positive("stall_min", c.StallMin)
	positive("max_stream_age", c.MaxStreamAge)
	positive("backoff_min", c.BackoffMin)
	if c.StallMax < c.StallMin {
		bad("stall_max", "%s is below stall_min %s", time.Duration(c.StallMax), time.Duration(c.StallMin))
	}
	if c.BackoffMax < c.BackoffMin {
		bad("backoff_max", "%s is below backoff_min %s", time.Duration(c.BackoffMax), time.Duration(c.BackoffMin))
	}
	if c.StallFactor <= 0 {
		bad("stall_factor", "must be positive, got %g", c.StallFactor)
	}
	if c.MaxStreams < 0 {
		bad("max_streams", "negative cap %d; use 0 for no cap", c.MaxStreams)
	}
	if c.MaxStreamsPerNode < 0 {
		bad("max_streams_per_node", "negative cap %d; use 0 for no cap", c.MaxStreamsPerNode)
	}
	if c.MaxLineBytes < 1024 {
		bad("max_line_bytes", "%d is below the minimum of 1024", c.MaxLineBytes)
	}
	if c.QPS <= 0 {
		bad("qps", "must be positive, got %g", c.QPS)
	}
	if c.Burst <= 0 {
		bad("burst", "must be positive, got %d", c.Burst)
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration that YAML spells as "30s" or "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(value *yaml.Node) error {
	v, err := time.ParseDuration(value.Value)
	if value.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: invalid duration %q, want a form such as 30s or 5m", value.Line, value.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String returns the Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }
