package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
	"github.com/authwatch/authwatch/internal/configfile"
	"github.com/authwatch/authwatch/remediation"
	"github.com/authwatch/authwatch/rules"
	"github.com/authwatch/authwatch/watcher"
)

// config is the configuration file: one top-level section per package,
// each owned and validated by that package. A package adds its section
// with one field line here and one line in validate.
type config struct {
	Watch watcher.Config `yaml:"watch"`
	Rules rules.Config   `yaml:"rules"`
	// Policies and Storm make up incident.Config; Alerting configures the
	// notifiers.
	Policies    []incident.Policy  `yaml:"policies"`
	Storm       incident.Storm     `yaml:"storm"`
	Alerting    alerting.Config    `yaml:"alerting"`
	Remediation remediation.Config `yaml:"remediation"`

	// refs are the files and environment variables that the file names,
	// with relative paths already resolved.
	refs []reference `yaml:"-"`
}

// reference is a file path or environment variable named at a YAML path.
type reference struct {
	kind  configfile.RefKind
	path  string
	value string
}

// incidentConfig returns the incident engine's part of the file.
func (c *config) incidentConfig() incident.Config {
	return incident.Config{Policies: c.Policies, Storm: c.Storm}
}

// defaultConfig returns the configuration that the file is decoded over.
func defaultConfig() config {
	return config{
		Watch:    watcher.DefaultConfig(),
		Policies: incident.DefaultPolicies(),
		Storm:    incident.DefaultStorm(),
	}
}

// validate checks every section and joins the errors; each names its
// YAML path.
func (c *config) validate() error {
	return errors.Join(
		c.Watch.Validate("watch"),
		c.Rules.Validate(),
		func() error { ic := c.incidentConfig(); return ic.Validate() }(),
		c.Alerting.Validate(),
		c.Remediation.Validate(),
		checkRotationPolicies(c),
	)
}

// loadConfig reads and strictly decodes the file at path over the
// defaults, resolves relative file paths against the file's directory,
// then validates it. An empty path returns the defaults.
func loadConfig(path string) (config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	refs, err := configfile.Decode(path, data, &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s is invalid:\n%w", path, err)
	}
	configfile.ResolvePaths(refs, filepath.Dir(path))
	for _, r := range refs {
		if *r.Value != "" {
			cfg.refs = append(cfg.refs, reference{kind: r.Kind, path: r.Path, value: *r.Value})
		}
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("config %s is invalid:\n%w", path, err)
	}
	return cfg, nil
}

// checkReferences opens every file that the configuration names and
// looks up every environment variable. A missing or unreadable file is an
// error; an unset variable is only a warning, because the shell that
// validates the file may not have the daemon's environment.
func (c *config) checkReferences() (warnings []string, err error) {
	var errs []error
	for _, r := range c.refs {
		switch r.kind {
		case configfile.File:
			f, oerr := os.Open(r.value)
			if oerr != nil {
				errs = append(errs, fmt.Errorf("%s: cannot read %q: %w; create the file or fix the path (relative paths are relative to the configuration file)", r.path, r.value, errors.Unwrap(oerr)))
				continue
			}
			st, serr := f.Stat()
			f.Close()
			if serr == nil && st.IsDir() {
				errs = append(errs, fmt.Errorf("%s: %q is a directory; name a file", r.path, r.value))
			}
		case configfile.Env:
			if _, ok := os.LookupEnv(r.value); !ok {
				warnings = append(warnings, fmt.Sprintf("%s: environment variable %s is not set here; set it where authwatch runs", r.path, r.value))
			}
		}
	}
	return warnings, errors.Join(errs...)
}
