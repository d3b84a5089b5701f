package remediation

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/authwatch/authwatch/rules"
)

// Config is the `remediation` section of the configuration file.
type Config struct {
	// Disabled is the global kill switch: no target rotates, not even by
	// hand, while it is set.
	Disabled bool     `yaml:"disabled"`
	Targets  []Target `yaml:"targets"`
}

// Target is one token that authwatch may rotate.
type Target struct {
	// Name identifies the target in commands, metrics, Events and reports.
	Name string `yaml:"name"`
	// On lists the policies whose incidents trigger a rotation. An empty
	// list leaves the target to `authwatch rotate` and proactive renewal.
	On []string `yaml:"on"`
	// Categories narrows the triggering incidents and the matches that
	// verification counts; the default is auth_failure, which includes
	// token_expired.
	Categories []string `yaml:"categories"`
	// Workloads lists the "<Kind>/<name>" workloads whose incidents
	// trigger the target; the default is the workloads in Restart.
	Workloads []string  `yaml:"workloads"`
	Secret    SecretRef `yaml:"secret"`
	// Restart lists the workloads, in the Secret's namespace, that read the
	// token and are restarted after the patch.
	Restart []WorkloadRef `yaml:"restart"`
	// RestartVolumeMounts restarts workloads even where they read the token
	// through a plain Secret volume, which the kubelet updates in place.
	RestartVolumeMounts bool   `yaml:"restart_volume_mounts"`
	Source              Source `yaml:"source"`
	// Format is the expected token format: auto (a JWT is checked as a
	// JWT, anything else as an opaque token), jwt or opaque.
	Format string `yaml:"format"`
	// MinValidity is how long a new JWT must stay valid at least.
	MinValidity time.Duration `yaml:"min_validity"`
	// DryRun logs and reports every step and writes nothing. A target
	// without the key is a dry run.
	DryRun *bool `yaml:"dry_run"`
	// Disabled is the kill switch of this target.
	Disabled bool `yaml:"disabled"`
	// Cooldown is the least time between two rotations of the target.
	Cooldown time.Duration `yaml:"cooldown"`
	// MaxPerHour caps the rotations of the target in any hour.
	MaxPerHour int `yaml:"max_per_hour"`
	// RolloutTimeout bounds the wait for each restarted workload.
	RolloutTimeout time.Duration `yaml:"rollout_timeout"`
	// VerifyWindow is how long the new pods must log no matching failure.
	VerifyWindow time.Duration `yaml:"verify_window"`
	// VolumeSyncWait is how long verification waits for the kubelet to
	// update a mounted Secret file when no restart happens.
	VolumeSyncWait time.Duration `yaml:"volume_sync_wait"`
	// KeepPrevious selects what the backup Secret keeps of the replaced
	// token: value (allows a rollback) or hash (SHA-256 only).
	KeepPrevious string `yaml:"keep_previous"`
	// RenewBefore rotates a JWT this long before its exp; zero disables
	// proactive renewal. The expiry gauge is exported either way.
	RenewBefore    time.Duration  `yaml:"renew_before"`
	CircuitBreaker CircuitBreaker `yaml:"circuit_breaker"`

	dryRun     bool
	categories []rules.Category
	workloads  map[string]bool
	pattern    *regexp.Regexp
}

// SecretRef names the Secret key that holds the token.
type SecretRef struct {
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	Key       string `yaml:"key"`
}

// WorkloadRef names a Deployment, StatefulSet or DaemonSet.
type WorkloadRef struct {
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

// String returns "<Kind>/<name>", the form that rules.Source.Workload uses.
func (w WorkloadRef) String() string { return w.Kind + "/" + w.Name }

// CircuitBreaker stops automatic rotation of a target whose rotations
// recur at a steady period, the sign of a token lifetime that a rotation
// cannot fix.
type CircuitBreaker struct {
	// PeriodicRepeats is the number of similar intervals between
	// consecutive rotations that opens the breaker; zero disables it.
	PeriodicRepeats int `yaml:"periodic_repeats"`
	// Tolerance is how far, as a fraction of their mean, intervals may
	// differ and still count as similar.
	Tolerance float64 `yaml:"tolerance"`
	// MaxPeriod ignores intervals longer than this.
	MaxPeriod time.Duration `yaml:"max_period"`
}

// Source is the origin of new tokens. Exactly one field is set.
type Source struct {
	HTTP    *HTTPSource    `yaml:"http"`
	Exec    *ExecSource    `yaml:"exec"`
	Command *CommandSource `yaml:"command"`
}

// HTTPSource requests a token from an issuing endpoint, for example
// SimpleJWT's obtain-pair view or DRF's obtain_auth_token view.
type HTTPSource struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// BodyFormat is json or form.
	BodyFormat string `yaml:"body_format"`
	// CredentialsSecret names a Secret in the target's namespace whose keys
	// become the body fields (for example username and password).
	CredentialsSecret string `yaml:"credentials_secret"`
	// CredentialsFile is a JSON object file whose string fields become
	// the body fields.
	CredentialsFile string `yaml:"credentials_file"`
	// TokenPath picks the token out of the JSON response: dot-separated
	// object keys such as "access" or "data.token".
	TokenPath string        `yaml:"token_path"`
	Timeout   time.Duration `yaml:"timeout"`
	TLS       TLSConfig     `yaml:"tls"`
}

// TLSConfig configures the HTTPS connection of an HTTP source.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// ExecSource runs a command in a pod of the issuing service, the way
// `kubectl exec` does, and picks the token out of its standard output.
type ExecSource struct {
	// Namespace defaults to the target's namespace.
	Namespace string `yaml:"namespace"`
	// Selector is a label selector for the pods; a running, ready one is
	// chosen.
	Selector  string   `yaml:"selector"`
	Container string   `yaml:"container"`
	Command   []string `yaml:"command"`
	// TokenPattern is a regular expression; its first capture group, or
	// the whole match without groups, is the token.
	TokenPattern string        `yaml:"token_pattern"`
	Timeout      time.Duration `yaml:"timeout"`
}

// CommandSource runs a local program whose standard output is the token.
type CommandSource struct {
	Command []string      `yaml:"command"`
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults for target fields left out of the file.
const (
	DefaultCooldown        = 10 * time.Minute
	DefaultMaxPerHour      = 3
	DefaultRolloutTimeout  = 5 * time.Minute
	DefaultVerifyWindow    = 2 * time.Minute
	DefaultVolumeSyncWait  = 90 * time.Second
	DefaultMinValidity     = time.Minute
	DefaultSourceTimeout   = 30 * time.Second
	DefaultPeriodicRepeats = 3
	DefaultTolerance       = 0.2
	DefaultMaxPeriod       = 24 * time.Hour
)

var workloadKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true}

// Validate fills in defaults and checks every target. Each error names its
// YAML path, for example "remediation.targets[0].secret.key".
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i := range c.Targets {
		t := &c.Targets[i]
		at := fmt.Sprintf("remediation.targets[%d]", i)
		errs = append(errs, t.validate(at)...)
		if j, dup := seen[t.Name]; dup && t.Name != "" {
			errs = append(errs, fmt.Errorf("%s.name: duplicate target name %q, also used by remediation.targets[%d]: give each target its own name", at, t.Name, j))
		}
		seen[t.Name] = i
	}
	return errors.Join(errs...)
}

// Target returns the target named name.
func (c *Config) Target(name string) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i], true
		}
	}
	return nil, false
}

// IsDryRun reports whether the target only logs and reports.
func (t *Target) IsDryRun() bool { return t.dryRun }

func (t *Target) validate(at string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{at, field}, args...)...))
	}

	if t.Name == "" {
		bad("name", "missing: every target needs a name")
	}
	if t.Secret.Name == "" {
		bad("secret.name", "missing: name the Secret that holds the token")
	}
	if t.Secret.Namespace == "" {
		bad("secret.namespace", "missing: name the Secret's namespace")
	}
	if t.Secret.Key == "" {
		bad("secret.key", "missing: name the Secret key that holds the token")
	}
	for j, w := range t.Restart {
		if !workloadKinds[w.Kind] {
			bad(fmt.Sprintf("restart[%d].kind", j), "invalid kind %q: use Deployment, StatefulSet or DaemonSet", w.Kind)
		}
		if w.Name == "" {
			bad(fmt.Sprintf("restart[%d].name", j), "missing: name the workload to restart")
		}
	}

	t.workloads = map[string]bool{}
	for j, w := range t.Workloads {
		kind, name, ok := strings.Cut(w, "/")
		if !ok || !workloadKinds[kind] || name == "" {
			bad(fmt.Sprintf("workloads[%d]", j), "invalid workload %q: use <Kind>/<name>, for example Deployment/town-builder", w)
		}
		t.workloads[w] = true
	}
	if len(t.Workloads) == 0 {
		for _, w := range t.Restart {
			t.workloads[w.String()] = true
		}
	}

	t.categories = t.categories[:0]
	for j, name := range t.Categories {
		c, ok := rules.ParseCategory(name)
		if !ok || c == rules.Error {
			bad(fmt.Sprintf("categories[%d]", j), "invalid category %q: use auth_failure or token_expired", name)
			continue
		}
		t.categories = append(t.categories, c)
	}
	if len(t.categories) == 0 {
		t.categories = []rules.Category{rules.AuthFailure}
	}

	switch t.Format {
	case "":
		t.Format = "auto"
	case "auto", "jwt", "opaque":
	default:
		bad("format", "invalid format %q: use auto, jwt or opaque", t.Format)
	}
	switch t.KeepPrevious {
	case "":
		t.KeepPrevious = "value"
	case "value", "hash":
	default:
		bad("keep_previous", "invalid value %q: use value or hash", t.KeepPrevious)
	}

	t.dryRun = t.DryRun == nil || *t.DryRun
	setDuration(&t.Cooldown, DefaultCooldown)
	setDuration(&t.RolloutTimeout, DefaultRolloutTimeout)
	setDuration(&t.VerifyWindow, DefaultVerifyWindow)
	setDuration(&t.VolumeSyncWait, DefaultVolumeSyncWait)
	setDuration(&t.MinValidity, DefaultMinValidity)
	if t.MaxPerHour == 0 {
		t.MaxPerHour = DefaultMaxPerHour
	}
	for field, d := range map[string]time.Duration{
		"cooldown": t.Cooldown, "rollout_timeout": t.RolloutTimeout, "verify_window": t.VerifyWindow,
		"volume_sync_wait": t.VolumeSyncWait, "min_validity": t.MinValidity, "renew_before": t.RenewBefore,
	} {
		if d < 0 {
			bad(field, "invalid duration %s: use a positive duration such as 1m", d)
		}
	}
	if t.MaxPerHour < 0 {
		bad("max_per_hour", "invalid value %d: use a positive number", t.MaxPerHour)
	}

	cb := &t.CircuitBreaker
	if cb.PeriodicRepeats == 0 {
		cb.PeriodicRepeats = DefaultPeriodicRepeats
	}
	if cb.PeriodicRepeats < 0 {
		cb.PeriodicRepeats = 0 // a negative value disables the breaker
	}
	if cb.Tolerance == 0 {
		cb.Tolerance = DefaultTolerance
	}
	if cb.Tolerance < 0 || cb.Tolerance >= 1 {
		bad("circuit_breaker.tolerance", "invalid value %g: use a fraction between 0 and 1 such as 0.2", cb.Tolerance)
	}
	setDuration(&cb.MaxPeriod, DefaultMaxPeriod)

	errs = append(errs, t.validateSource(at+".source")...)
	return errs
}

func (t *Target) validateSource(at string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{at, field}, args...)...))
	}
	s := &t.Source
	set := 0
	for _, ok := range []bool{s.HTTP != nil, s.Exec != nil, s.Command != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return []error{fmt.Errorf("%s: set exactly one of http, exec and command (found %d)", at, set)}
	}

	switch {
	case s.HTTP != nil:
		h := s.HTTP
		u, err := url.Parse(h.URL)
		if h.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("http.url", "invalid URL %q: use an absolute http or https URL", h.URL)
		} else if u.User != nil {
			bad("http.url", "URL %q carries credentials: move them to credentials_secret or credentials_file", u.Redacted())
		}
		if h.Method == "" {
			h.Method = "POST"
		}
		h.Method = strings.ToUpper(h.Method)
		if h.Method != "POST" && h.Method != "PUT" && h.Method != "GET" {
			bad("http.method", "invalid method %q: use POST, PUT or GET", h.Method)
		}
		switch h.BodyFormat {
		case "":
			h.BodyFormat = "json"
		case "json", "form":
		default:
			bad("http.body_format", "invalid format %q: use json or form", h.BodyFormat)
		}
		if h.CredentialsSecret != "" && h.CredentialsFile != "" {
			bad("http.credentials_secret", "credentials_secret and credentials_file are both set: keep one")
		}
		if h.TokenPath == "" {
			bad("http.token_path", "missing: name the response field that holds the token, for example access")
		}
		setDuration(&h.Timeout, DefaultSourceTimeout)
	case s.Exec != nil:
		e := s.Exec
		if e.Namespace == "" {
			e.Namespace = t.Secret.Namespace
		}
		if _, err := labels.Parse(e.Selector); err != nil || e.Selector == "" {
			bad("exec.selector", "invalid label selector %q: use key=value, for example app=api", e.Selector)
		}
		if len(e.Command) == 0 {
			bad("exec.command", "missing: give the command to run in the pod")
		}
		re, err := regexp.Compile(e.TokenPattern)
		switch {
		case e.TokenPattern == "":
			bad("exec.token_pattern", "missing: give a regular expression whose first group is the token")
		case err != nil:
			bad("exec.token_pattern", "invalid regular expression %q: %v", e.TokenPattern, err)
		default:
			t.pattern = re
		}
		setDuration(&e.Timeout, DefaultSourceTimeout)
	case s.Command != nil:
		if len(s.Command.Command) == 0 {
			bad("command.command", "missing: give the program and its arguments")
		}
		setDuration(&s.Command.Timeout, DefaultSourceTimeout)
	}
	return errs
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// selects reports whether an incident of the policy, category and
// workload should trigger the target.
func (t *Target) selects(policy string, category rules.Category, namespace, workload string) bool {
	if namespace != t.Secret.Namespace || !t.workloads[workload] {
		return false
	}
	found := false
	for _, p := range t.On {
		if p == policy {
			found = true
		}
	}
	// An incident that carries no category is judged by its policy alone.
	return found && (category == rules.CategoryNone || t.countsCategory(category))
}

func (t *Target) countsCategory(c rules.Category) bool {
	for _, want := range t.categories {
		if c.Is(want) {
			return true
		}
	}
	return false
}
