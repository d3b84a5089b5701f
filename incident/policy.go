// Package incident turns rule matches into incidents. Policies set which
// matches count, how many within which window open an incident, how long
// a pending incident waits and how long a quiet incident stays open. The
// engine keeps one open incident per (policy, namespace, workload) and
// folds storms of incidents into one summary. The package is pure: it
// does no I/O, starts no goroutines and takes the current time as an
// argument.
package incident

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/authwatch/authwatch/rules"
)

// Selector picks the matches that a policy counts. Empty lists select
// everything; all non-empty lists must select a match.
type Selector struct {
	// Categories are category names such as auth_failure. A selector for
	// auth_failure also selects token_expired.
	Categories []string `yaml:"categories"`
	// Rules are rule IDs.
	Rules []string `yaml:"rules"`
	// MinSeverity is the lowest severity counted (info, warning, error,
	// critical); empty counts all.
	MinSeverity string `yaml:"min_severity"`
	// Namespaces are exact namespace names.
	Namespaces []string `yaml:"namespaces"`
	// Workloads are "<Kind>/<name>" patterns in path.Match syntax, for
	// example "Deployment/town-*".
	Workloads []string `yaml:"workloads"`
}

// Policy is a rule for when matches become an incident.
type Policy struct {
	// Name identifies the policy in incident keys, metrics, alerts and
	// remediation targets. Reload keeps incidents of a policy by its name.
	Name   string   `yaml:"name"`
	Select Selector `yaml:"select"`
	// Threshold is the number of selected matches within Window that opens
	// an incident. Zero makes the policy count-only: it never opens one.
	Threshold int           `yaml:"threshold"`
	Window    time.Duration `yaml:"window"`
	// For is how long the threshold must keep being met before the
	// incident fires; zero fires at once.
	For time.Duration `yaml:"for"`
	// ResolveAfter is the quiet period without a selected match after
	// which a firing incident resolves. A policy in the file that leaves
	// the key out gets DefaultResolveAfter.
	ResolveAfter time.Duration `yaml:"resolve_after"`

	categories  []rules.Category
	minSeverity rules.Severity
}

// Storm configures the storm guard: when more than Workloads distinct
// workloads start firing within Window, further incidents fold into one
// summary incident instead of notifying one by one.
type Storm struct {
	Workloads int           `yaml:"workloads"`
	Window    time.Duration `yaml:"window"`
}

// Config is the policy part of the configuration file: the top-level
// `policies` list and the `storm` section.
type Config struct {
	Policies []Policy
	Storm    Storm
}

// StormPolicy is the policy name of storm summary incidents.
const StormPolicy = "storm"

// DefaultPolicies returns the built-in policies: token-expired (1 match in
// 1m), auth-failures (5 in 1m), both resolving after 5m quiet and counting
// severity error and above, and errors (count only).
func DefaultPolicies() []Policy {
	return []Policy{
		{
			Name:         "token-expired",
			Select:       Selector{Categories: []string{"token_expired"}, MinSeverity: "error"},
			Threshold:    1,
			Window:       time.Minute,
			ResolveAfter: DefaultResolveAfter,
		},
		{
			Name:         "auth-failures",
			Select:       Selector{Categories: []string{"auth_failure"}, MinSeverity: "error"},
			Threshold:    5,
			Window:       time.Minute,
			ResolveAfter: DefaultResolveAfter,
		},
		{
			Name:   "errors",
			Select: Selector{Categories: []string{"error"}},
		},
	}
}

// DefaultResolveAfter is the resolve_after of a policy that does not set
// it, the same as the built-in policies use.
const DefaultResolveAfter = 5 * time.Minute

// UnmarshalYAML decodes a policy over DefaultResolveAfter, so that only an
// explicit resolve_after of zero or less is invalid.
func (p *Policy) UnmarshalYAML(n *yaml.Node) error {
	type plain Policy // without this method, so Decode does not recurse
	v := plain{ResolveAfter: DefaultResolveAfter}
	if err := n.Decode(&v); err != nil {
		return err
	}
	*p = Policy(v)
	return nil
}

// DefaultStorm returns the default storm guard: more than 10 workloads
// firing within one minute.
func DefaultStorm() Storm {
	return Storm{Workloads: 10, Window: time.Minute}
}

// DefaultConfig returns the default policies and storm guard.
func DefaultConfig() Config {
	return Config{Policies: DefaultPolicies(), Storm: DefaultStorm()}
}

// Validate checks the policies and the storm guard and compiles the
// selectors. Each error names its YAML path, for example
// "policies[1].window".
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i := range c.Policies {
		p := &c.Policies[i]
		at := fmt.Sprintf("policies[%d]", i)
		if err := p.compile(at); err != nil {
			errs = append(errs, err)
		}
		if j, dup := seen[p.Name]; dup && p.Name != "" {
			errs = append(errs, fmt.Errorf("%s.name: duplicate policy name %q, also used by policies[%d]: give each policy its own name", at, p.Name, j))
		}
		seen[p.Name] = i
	}
	if c.Storm.Workloads < 0 {
		errs = append(errs, fmt.Errorf("storm.workloads: invalid value %d: use a positive number, or 0 to disable the storm guard", c.Storm.Workloads))
	}
	if c.Storm.Workloads > 0 && c.Storm.Window <= 0 {
		errs = append(errs, fmt.Errorf("storm.window: invalid value %s: use a positive duration such as 1m", c.Storm.Window))
	}
	return errors.Join(errs...)
}

func (p *Policy) compile(at string) error {
	var errs []error
	switch {
	case p.Name == "":
		errs = append(errs, fmt.Errorf("%s.name: missing: every policy needs a name", at))
	case p.Name == StormPolicy:
		errs = append(errs, fmt.Errorf("%s.name: %q is reserved for storm summaries: choose another name", at, p.Name))
	}
	p.categories = p.categories[:0]
	for j, name := range p.Select.Categories {
		c, ok := rules.ParseCategory(name)
		if !ok {
			errs = append(errs, fmt.Errorf("%s.select.categories[%d]: unknown category %q: use auth_failure, token_expired or error", at, j, name))
			continue
		}
		p.categories = append(p.categories, c)
	}
	p.minSeverity = rules.SeverityNone
	if p.Select.MinSeverity != "" {
		s, ok := rules.ParseSeverity(p.Select.MinSeverity)
		if !ok {
			errs = append(errs, fmt.Errorf("%s.select.min_severity: unknown severity %q: use info, warning, error or critical", at, p.Select.MinSeverity))
		}
		p.minSeverity = s
	}
	for j, pattern := range p.Select.Workloads {
		if _, err := path.Match(pattern, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s.select.workloads[%d]: invalid pattern %q: %w", at, j, pattern, err))
		}
	}
	if p.Threshold < 0 {
		errs = append(errs, fmt.Errorf("%s.threshold: invalid value %d: use a positive number, or 0 for a count-only policy", at, p.Threshold))
	}
	if p.Threshold > 0 {
		if p.Window <= 0 {
			errs = append(errs, fmt.Errorf("%s.window: invalid value %s: use a positive duration such as 1m", at, p.Window))
		}
		if p.ResolveAfter <= 0 {
			errs = append(errs, fmt.Errorf("%s.resolve_after: invalid value %s: use a positive duration such as 5m", at, p.ResolveAfter))
		}
	}
	if p.For < 0 {
		errs = append(errs, fmt.Errorf("%s.for: invalid value %s: use 0 or a positive duration", at, p.For))
	}
	return errors.Join(errs...)
}

// Selects reports whether the policy counts m. Call it only on a policy
// of a validated Config.
func (p *Policy) Selects(m *rules.Match) bool {
	if len(p.categories) > 0 && !slices.ContainsFunc(p.categories, m.Category.Is) {
		return false
	}
	if m.Severity < p.minSeverity {
		return false
	}
	if len(p.Select.Rules) > 0 && !slices.Contains(p.Select.Rules, m.RuleID) {
		return false
	}
	src := &m.Line.Source
	if len(p.Select.Namespaces) > 0 && !slices.Contains(p.Select.Namespaces, src.Namespace) {
		return false
	}
	if len(p.Select.Workloads) > 0 {
		return slices.ContainsFunc(p.Select.Workloads, func(pattern string) bool {
			ok, _ := path.Match(pattern, src.Workload)
			return ok
		})
	}
	return true
}
