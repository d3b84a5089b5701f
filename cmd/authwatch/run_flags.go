package main

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// validate checks the watch flags that were given, before they override
// the configuration file and before anything connects, so that each
// error names the flag rather than the YAML key it overrides.
func (f *runFlags) validate(cmd *cobra.Command) error {
	set := cmd.Flags().Changed
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if set("all-namespaces") && f.allNamespaces && set("namespace") {
		errs = append(errs, fmt.Errorf("-A/--all-namespaces cannot be combined with -n/--namespace %s; give one of them", quoteAll(f.namespaces)))
	}
	for _, ns := range f.namespaces {
		if ns == "" {
			bad("-n/--namespace", "empty namespace name; name a namespace or leave the flag out")
		}
	}

	if set("selector") {
		if _, err := labels.Parse(f.selector); err != nil {
			bad("-l/--selector", "invalid label selector %q: %v; write it as kubectl does, for example app=api,tier!=cache", f.selector, err)
		}
	}
	if set("field-selector") {
		if _, err := fields.ParseSelector(f.fieldSelector); err != nil {
			bad("--field-selector", "invalid field selector %q: %v; use a form such as spec.nodeName=node-1", f.fieldSelector, err)
		}
	}

	for _, p := range f.containers {
		if _, err := regexp.Compile(p); err != nil {
			bad("--container", "invalid RE2 pattern %q: %v", p, err)
		}
	}
	for _, p := range f.excludeContainers {
		if _, err := regexp.Compile(p); err != nil {
			bad("--exclude-container", "invalid RE2 pattern %q: %v", p, err)
		}
	}

	if set("since") && f.since < 0 {
		bad("--since", "negative duration %s; use 0 or a duration such as 5m", f.since)
	}
	if set("qps") && f.qps <= 0 {
		bad("--qps", "must be positive, got %g", f.qps)
	}
	if set("burst") && f.burst <= 0 {
		bad("--burst", "must be positive, got %d", f.burst)
	}
	if set("max-streams") && f.maxStreams < 0 {
		bad("--max-streams", "negative cap %d; use 0 for no cap", f.maxStreams)
	}
	if set("max-streams-per-node") && f.maxStreamsPerNode < 0 {
		bad("--max-streams-per-node", "negative cap %d; use 0 for no cap", f.maxStreamsPerNode)
	}
	return errors.Join(errs...)
}

// quoteAll quotes each value and separates them with commas.
func quoteAll(values []string) string {
	out := ""
	for i, v := range values {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%q", v)
	}
	return out
}
