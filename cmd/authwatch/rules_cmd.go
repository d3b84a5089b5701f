package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/authwatch/authwatch/rules"
)

var errNoRules = errors.New("no rules are active; remove some --disable flags")

// ruleFlags select the rules of the scan and rules commands.
type ruleFlags struct {
	files   []string
	disable []string
}

func (f *ruleFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&f.files, "rules", nil, "rule pack file applied on top of the default pack (repeatable)")
	fl.StringSliceVar(&f.disable, "disable", nil, "rule ids to turn off (repeatable or comma-separated)")
}

func (f *ruleFlags) compile() (*rules.Matcher, error) {
	return compilePacks(f.files, f.disable, "--disable")
}

// compilePacks reads the rule pack files and compiles them over the
// default pack.
func compilePacks(files, disable []string, disableName string) (*rules.Matcher, error) {
	opts := rules.Options{Disable: disable, DisableName: disableName}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		opts.Packs = append(opts.Packs, rules.PackFile{Name: path, Data: data})
	}
	m, err := rules.Compile(opts)
	if err != nil {
		return nil, fmt.Errorf("invalid rules:\n%w", err)
	}
	if len(m.Rules()) == 0 {
		return nil, errNoRules
	}
	return m, nil
}

func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "List the effective rules or test rules against sample lines",
	}
	cmd.AddCommand(newRulesListCmd(), newRulesTestCmd())
	return cmd
}

func newRulesListCmd() *cobra.Command {
	f := &ruleFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the effective rules in the order they are tried",
		Long: "List prints the rules that scan and the daemon use: the default pack with the\n" +
			"packs given by --rules applied and the --disable ids removed, in the order in\n" +
			"which they are tried. With -o yaml it prints them as a rule pack, a starting\n" +
			"point for an override.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "yaml" {
				return &exitError{code: exitUsage, err: fmt.Errorf("invalid --output %q; use text or yaml", output)}
			}
			m, err := f.compile()
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if output == "yaml" {
				return writeRulesYAML(cmd.OutOrStdout(), m.Rules())
			}
			return writeRulesTable(cmd.OutOrStdout(), m.Rules())
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or yaml")
	return cmd
}

func writeRulesTable(w io.Writer, rs []rules.Rule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCATEGORY\tSEVERITY\tORIGIN\tDESCRIPTION")
	for _, r := range rs {
		desc, _, _ := strings.Cut(r.Description, ". ")
		desc = strings.TrimSuffix(desc, ".")
		if len(desc) > 72 {
			desc = desc[:69] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Category, r.Severity, r.Origin, desc)
	}
	return tw.Flush()
}

// yamlRule is the pack form of a rule, for `rules list -o yaml`.
type yamlRule struct {
	ID            string          `yaml:"id"`
	Description   string          `yaml:"description,omitempty"`
	Category      string          `yaml:"category"`
	Severity      string          `yaml:"severity"`
	Literals      []string        `yaml:"literals,flow"`
	CaseSensitive bool            `yaml:"case_sensitive,omitempty"`
	Regex         string          `yaml:"regex,omitempty"`
	JSON          []yamlCondition `yaml:"json,omitempty"`
	Exclude       *yamlExclude    `yaml:"exclude,omitempty"`
	Fields        []string        `yaml:"fields,omitempty,flow"`
}

type yamlCondition struct {
	Field    string   `yaml:"field"`
	Equals   []string `yaml:"equals,omitempty,flow"`
	Contains []string `yaml:"contains,omitempty,flow"`
}

type yamlExclude struct {
	Literals []string `yaml:"literals,omitempty,flow"`
	Regex    string   `yaml:"regex,omitempty"`
}

func writeRulesYAML(w io.Writer, rs []rules.Rule) error {
	var pack struct {
		Rules []yamlRule `yaml:"rules"`
	}
	for _, r := range rs {
		yr := yamlRule{
			ID: r.ID, Description: r.Description, Category: r.Category.String(),
			Severity: r.Severity.String(), Literals: r.Literals, CaseSensitive: r.CaseSensitive,
			Regex: r.Regex, Fields: r.Fields,
		}
		for _, c := range r.JSON {
			yr.JSON = append(yr.JSON, yamlCondition{Field: c.Field, Equals: c.Equals, Contains: c.Contains})
		}
		if len(r.Exclude.Literals) > 0 || r.Exclude.Regex != "" {
			yr.Exclude = &yamlExclude{Literals: r.Exclude.Literals, Regex: r.Exclude.Regex}
		}
		pack.Rules = append(pack.Rules, yr)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(pack); err != nil {
		return err
	}
	return enc.Close()
}

// ruleTestFile is the format of `authwatch rules test` files.
type ruleTestFile struct {
	// RuleFiles are rule packs applied on top of the default pack, relative
	// to the test file.
	RuleFiles []string   `yaml:"rule_files"`
	Disable   []string   `yaml:"disable"`
	Tests     []ruleTest `yaml:"tests"`
}

type ruleTest struct {
	Name  string   `yaml:"name"`
	Line  string   `yaml:"line"`
	Lines []string `yaml:"lines"`
	// Expect is the id of the rule that must win on every line, or
	// "no match".
	Expect   string `yaml:"expect"`
	Category string `yaml:"category"`
}

const noMatch = "no match"

func newRulesTestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "test FILE...",
		Short: "Check that rules classify sample lines as expected",
		Long: "Test reads YAML test files and runs every line through the rules, the way\n" +
			"`promtool test rules` does for alerting rules. A test file lists rule_files\n" +
			"(packs applied on top of the default pack, relative to the test file), an\n" +
			"optional disable list, and tests, each with a line or lines, the rule id that\n" +
			"must match them (or \"no match\") in expect, and optionally the category.\n" +
			"Exit status: 0 when every test passes, 1 when one fails, 2 on an invalid file.",
		Example: "  authwatch rules test examples/town-test.yaml",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := 0
			for _, path := range args {
				n, err := runRuleTestFile(cmd.OutOrStdout(), path)
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				failed += n
			}
			if failed > 0 {
				return &exitError{code: exitNotFound, err: fmt.Errorf("%d %s failed", failed, plural(failed, "test", "tests"))}
			}
			return nil
		},
	}
}

// runRuleTestFile runs the tests of one file, printing each failure, and
// returns the number of failed tests.
func runRuleTestFile(w io.Writer, path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var tf ruleTestFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.TrimSpace(strings.TrimPrefix(msg, "unmarshal errors:\n"))
		return 0, fmt.Errorf("%s: %s", path, msg)
	}
	if err := validateRuleTests(path, &tf); err != nil {
		return 0, err
	}
	files := make([]string, len(tf.RuleFiles))
	for i, f := range tf.RuleFiles {
		files[i] = f
		if !filepath.IsAbs(f) {
			files[i] = filepath.Join(filepath.Dir(path), f)
		}
	}
	m, err := compilePacks(files, tf.Disable, "disable")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	ids := map[string]bool{noMatch: true}
	for _, r := range m.Rules() {
		ids[r.ID] = true
	}
	for i, tc := range tf.Tests {
		if !ids[tc.Expect] {
			return 0, fmt.Errorf("%s: tests[%d].expect: unknown rule id %q; give an active rule id or %q", path, i, tc.Expect, noMatch)
		}
	}

	failed, lines := 0, 0
	var matches []rules.Match
	for i, tc := range tf.Tests {
		name := fmt.Sprintf("tests[%d]", i)
		if tc.Name != "" {
			name += " (" + tc.Name + ")"
		}
		texts := tc.Lines
		if tc.Line != "" {
			texts = append([]string{tc.Line}, texts...)
		}
		ok := true
		for j, text := range texts {
			lines++
			matches = m.Match(&rules.Line{Text: []byte(text)}, matches[:0])
			got, gotCat := noMatch, ""
			if len(matches) > 0 {
				got, gotCat = matches[0].RuleID, matches[0].Category.String()
			}
			want := tc.Expect
			if got != want || (tc.Category != "" && gotCat != tc.Category) {
				ok = false
				desc := got
				if gotCat != "" {
					desc += " (" + gotCat + ")"
				}
				wantDesc := want
				if tc.Category != "" {
					wantDesc += " (" + tc.Category + ")"
				}
				fmt.Fprintf(w, "FAIL %s: %s line %d: got %s, want %s: %s\n", path, name, j+1, desc, wantDesc, rules.Mask([]byte(text)))
			}
		}
		if !ok {
			failed++
		}
	}
	fmt.Fprintf(w, "%s: %d %s, %d %s, %d failed\n", path, len(tf.Tests), plural(len(tf.Tests), "test", "tests"),
		lines, plural(lines, "line", "lines"), failed)
	return failed, nil
}

func validateRuleTests(path string, tf *ruleTestFile) error {
	var errs []error
	if len(tf.Tests) == 0 {
		errs = append(errs, fmt.Errorf("%s: tests: no tests; add a list of tests with line and expect", path))
	}
	for i, tc := range tf.Tests {
		if tc.Line == "" && len(tc.Lines) == 0 {
			errs = append(errs, fmt.Errorf("%s: tests[%d]: missing line or lines", path, i))
		}
		if tc.Expect == "" {
			errs = append(errs, fmt.Errorf("%s: tests[%d].expect: missing; give a rule id or %q", path, i, noMatch))
		}
		if tc.Category != "" {
			if _, ok := rules.ParseCategory(tc.Category); !ok {
				errs = append(errs, fmt.Errorf("%s: tests[%d].category: unknown category %q; valid categories are auth_failure, token_expired, error", path, i, tc.Category))
			}
		}
	}
	return errors.Join(errs...)
}
