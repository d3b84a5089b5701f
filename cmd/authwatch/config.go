package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/authwatch/authwatch/alerting"
	"github.com/authwatch/authwatch/incident"
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
// defaults, then validates it. An empty path returns the defaults.
func loadConfig(path string) (config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := decodeConfig(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("config %s is invalid:\n%w", path, err)
	}
	return cfg, nil
}

// decodeConfig decodes YAML strictly: unknown keys and more than one
// document are errors.
func decodeConfig(data []byte, cfg *config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file keeps the defaults
		}
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document; keep the whole configuration in one")
	}
	return nil
}
