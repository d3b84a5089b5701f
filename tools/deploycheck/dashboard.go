package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	sigsyaml "sigs.k8s.io/yaml"
)

// knownMetrics are the series that authwatch and Prometheus export; a
// dashboard query that names another one has a typo.
var knownMetrics = map[string]bool{
	"up":                                                      true,
	"authwatch_log_lines_total":                               true,
	"authwatch_log_lines_dropped_total":                       true,
	"authwatch_matches_total":                                 true,
	"authwatch_streams":                                       true,
	"authwatch_stream_reconnects_total":                       true,
	"authwatch_incidents_open":                                true,
	"authwatch_notifications_total":                           true,
	"authwatch_token_rotations_total":                         true,
	"authwatch_token_rotation_last_success_timestamp_seconds": true,
	"authwatch_token_rotation_circuit_open":                   true,
	"authwatch_token_expiry_timestamp_seconds":                true,
	"authwatch_config_last_reload_successful":                 true,
	"authwatch_build_info":                                    true,
	"authwatch_notification_queue_length":                     true,
	"authwatch_notification_delivery_seconds_bucket":          true,
	"authwatch_checkpoint_last_success_timestamp_seconds":     true,
}

// workloadMetrics carry the namespace and workload labels, so queries of
// them must follow the dashboard's namespace and workload variables.
var workloadMetrics = []string{"authwatch_matches_total", "authwatch_log_lines_total"}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Inputs     []any   `json:"__inputs"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		Datasource json.RawMessage `json:"datasource"`
		Expr       string          `json:"expr"`
		RefID      string          `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource json.RawMessage `json:"datasource"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
	AllValue   string          `json:"allValue"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var metricName = regexp.MustCompile(`\b(authwatch_[a-z_]+)\b`)

// checkDashboard checks that the dashboard imports into any Grafana. Its
// data source must be a variable, never a fixed UID, and its namespace and
// workload variables must exist and filter the workload queries. Every
// query must name known metrics and parse as PromQL, which promtool checks.
func checkDashboard(path, promtool string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if d.UID == "" || d.Title == "" {
		bad("uid and title must be set, so that a re-import replaces the dashboard")
	}
	if len(d.Inputs) > 0 || strings.Contains(string(data), "${DS_") {
		bad("__inputs and ${DS_...} work only through the import dialog; use the datasource variable")
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		bad(`templating needs a variable "datasource" of type datasource with query "prometheus"`)
	}
	for _, name := range []string{"namespace", "workload"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" {
			bad("templating needs a query variable %q", name)
			continue
		}
		if !v.IncludeAll || !v.Multi || v.AllValue != ".*" {
			bad("variable %q: set includeAll, multi and allValue \".*\", so that All matches series of any value", name)
		}
		errs = append(errs, checkDatasourceRef(path, "variable "+name, v.Datasource)...)
	}

	ids := map[int]string{}
	var exprs []string
	var walk func(panels []panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			at := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if other, dup := ids[p.ID]; dup {
				bad("%s: id also used by panel %q", at, other)
			}
			ids[p.ID] = p.Title
			if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				bad("%s: gridPos x=%d w=%d does not fit the 24 columns", at, p.GridPos.X, p.GridPos.W)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			errs = append(errs, checkDatasourceRef(path, at, p.Datasource)...)
			if len(p.Targets) == 0 {
				bad("%s: no query", at)
			}
			for _, t := range p.Targets {
				errs = append(errs, checkDatasourceRef(path, at+" target "+t.RefID, t.Datasource)...)
				if strings.TrimSpace(t.Expr) == "" {
					bad("%s target %s: empty expr", at, t.RefID)
					continue
				}
				exprs = append(exprs, t.Expr)
				for _, m := range metricName.FindAllStringSubmatch(t.Expr, -1) {
					if !knownMetrics[m[1]] {
						bad("%s: unknown metric %s", at, m[1])
					}
				}
				for _, wm := range workloadMetrics {
					if strings.Contains(t.Expr, wm) &&
						(!strings.Contains(t.Expr, `namespace=~"$namespace"`) || !strings.Contains(t.Expr, `workload=~"$workload"`)) {
						bad("%s: a query of %s must filter namespace=~\"$namespace\" and workload=~\"$workload\"", at, wm)
					}
				}
			}
		}
	}
	walk(d.Panels)
	if len(exprs) == 0 {
		bad("no queries")
	}
	for _, v := range []string{"namespace", "workload"} {
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(vars[v].Query, &q); err == nil && q.Query != "" {
			// label_values(metric{...}, label) is Grafana's; check the selector.
			if m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(q.Query); m != nil {
				exprs = append(exprs, m[1])
			} else {
				bad("variable %q: query %q is not label_values(selector, label)", v, q.Query)
			}
		}
	}
	if err := checkPromQL(promtool, exprs); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return errors.Join(errs...)
}

func checkDatasourceRef(path, at string, raw json.RawMessage) []error {
	var ref datasourceRef
	if len(raw) == 0 {
		return []error{fmt.Errorf("%s: %s: datasource is missing; set {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}", path, at)}
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		return []error{fmt.Errorf("%s: %s: datasource %s is not an object with a uid", path, at, raw)}
	}
	if ref.UID != "${datasource}" && ref.UID != "$datasource" {
		return []error{fmt.Errorf("%s: %s: datasource uid %q is fixed; use \"${datasource}\" so the dashboard works with any Prometheus", path, at, ref.UID)}
	}
	return nil
}

// SubstituteGrafanaVariables replaces the variables that the dashboard
// uses the way Grafana would with All selected and a 1m rate interval.
func substituteGrafanaVariables(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "1m",
		"$__interval", "1m",
		"$__range", "1h",
		"$namespace", ".*",
		"$workload", ".*",
	).Replace(expr)
}

// checkPromQL has promtool parse each expression as a recording rule.
func checkPromQL(promtool string, exprs []string) error {
	rf := RuleFile{Groups: []RuleGroup{{Name: "dashboard"}}}
	for i, e := range exprs {
		rf.Groups[0].Rules = append(rf.Groups[0].Rules, Rule{
			Record: fmt.Sprintf("dashboard:query_%d", i),
			Expr:   substituteGrafanaVariables(e),
		})
	}
	data, err := sigsyaml.Marshal(rf)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "deploycheck")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "dashboard-queries.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return err
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("promtool check rules on the dashboard's queries: %w\n%s", err, out)
	}
	return nil
}
