package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"

	sigsyaml "sigs.k8s.io/yaml"
)

// RuleFile is a Prometheus rule file, also the spec of a PrometheusRule.
type RuleFile struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ruleTests is the part of a promtool test file that lists the alerts
// expected at each evaluation time.
type ruleTests struct {
	Tests []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			AlertName string          `json:"alertname"`
			EvalTime  string          `json:"eval_time"`
			ExpAlerts []expectedAlert `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// expectedAlert keeps an expected alert undecoded; only the count matters.
type expectedAlert = map[string]any

func readRuleFile(path string) (*RuleFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rf RuleFile
	if err := sigsyaml.UnmarshalStrict(data, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rf, nil
}

// checkRules checks that the chart's copy of the rule file and the
// PrometheusRule form hold exactly the rules of deploy/prometheus/rules.yaml,
// and that the chart's dashboard is the same file as deploy/grafana's. It
// also checks that the promtool tests have, for every alert, a case where
// it fires and a case where it does not.
func checkRules(root string, rendered []*PrometheusRule) error {
	var errs []error
	promDir := filepath.Join(root, "deploy/prometheus")
	chartDir := filepath.Join(root, "deploy/helm/authwatch")
	rules, err := readRuleFile(filepath.Join(promDir, "rules.yaml"))
	if err != nil {
		return err
	}
	if len(rules.Groups) == 0 {
		return fmt.Errorf("%s: no rule groups", filepath.Join(promDir, "rules.yaml"))
	}

	for _, pair := range [][2]string{
		{filepath.Join(promDir, "rules.yaml"), filepath.Join(chartDir, "files/rules.yaml")},
		{filepath.Join(root, "deploy/grafana/authwatch.json"), filepath.Join(chartDir, "files/authwatch.json")},
	} {
		a, errA := os.ReadFile(pair[0])
		b, errB := os.ReadFile(pair[1])
		if err := errors.Join(errA, errB); err != nil {
			errs = append(errs, err)
			continue
		}
		if !bytes.Equal(a, b) {
			errs = append(errs, fmt.Errorf("%s differs from %s; run `make deploy-sync`", pair[1], pair[0]))
		}
	}

	prPath := filepath.Join(promDir, "prometheusrule.yaml")
	data, err := os.ReadFile(prPath)
	if err != nil {
		errs = append(errs, err)
	} else {
		var pr PrometheusRule
		if err := sigsyaml.UnmarshalStrict(data, &pr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", prPath, err))
		} else if !reflect.DeepEqual(pr.Spec, *rules) {
			errs = append(errs, fmt.Errorf("%s: spec differs from rules.yaml; run `make deploy-sync`", prPath))
		}
	}
	for _, pr := range rendered {
		if !reflect.DeepEqual(pr.Spec, *rules) {
			errs = append(errs, fmt.Errorf("PrometheusRule %s rendered by the chart differs from rules.yaml", pr.Metadata.Name))
		}
	}

	testPath := filepath.Join(promDir, "rules_test.yaml")
	data, err = os.ReadFile(testPath)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	var tests ruleTests
	if err := sigsyaml.Unmarshal(data, &tests); err != nil {
		return errors.Join(append(errs, fmt.Errorf("%s: %w", testPath, err))...)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, t := range tests.Tests {
		for _, a := range t.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				quiet[a.AlertName] = true
			}
		}
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
			}
		}
	}
	sort.Strings(alerts)
	for _, a := range alerts {
		if !fires[a] {
			errs = append(errs, fmt.Errorf("%s: no test case where alert %s fires", testPath, a))
		}
		if !quiet[a] {
			errs = append(errs, fmt.Errorf("%s: no test case where alert %s does not fire", testPath, a))
		}
	}
	return errors.Join(errs...)
}
