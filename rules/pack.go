package rules

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// PackFile is the content of one rule pack in YAML. Name is what errors
// report as the file, usually its path.
//
// A pack has two optional top-level keys: "rules", a list of rules whose
// keys mirror the fields of Rule in snake case (id, description, category,
// severity, literals, case_sensitive, whole_words, regex, json, exclude,
// fields), and
// "disable", a list of rule ids to turn off.
type PackFile struct {
	Name string
	Data []byte
}

// ConfigError reports one invalid value of a rule pack. Its message names
// the file, the line, the YAML path and the value.
type ConfigError struct {
	File string
	Line int
	Path string // for example "rules[3].regex"
	Msg  string // the problem, quoting the bad value
	Hint string // optional advice on the fix
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// pack is a parsed rule pack.
type pack struct {
	name    string
	rules   []Rule
	lines   []int    // per rule, its line in the file
	paths   []string // per rule, its YAML path
	disable []string
	disLine []int
}

// decoder walks a yaml.Node tree, collecting errors with their paths.
type decoder struct {
	file string
	errs []error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) failHint(n *yaml.Node, path, hint, format string, args ...any) {
	d.fail(n, path, format, args...)
	d.errs[len(d.errs)-1].(*ConfigError).Hint = hint
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// mapping iterates the keys of a mapping node, rejecting keys not in known
// and duplicate keys.
func (d *decoder) mapping(n *yaml.Node, path string, known []string, fn func(key string, v *yaml.Node, vpath string)) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		vpath := k.Value
		if path != "" {
			vpath = path + "." + k.Value
		}
		if !contains(known, k.Value) {
			d.fail(k, vpath, "unknown key %q; valid keys are %s", k.Value, strings.Join(known, ", "))
			continue
		}
		if seen[k.Value] {
			d.fail(k, vpath, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		fn(k.Value, v, vpath)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// strings accepts a scalar or a list of scalars.
func (d *decoder) strings(n *yaml.Node, path string) []string {
	if n.Kind == yaml.ScalarNode {
		if n.Tag == "!!null" {
			return nil
		}
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a string or a list of strings, got %s", kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		if s, ok := d.scalar(e, fmt.Sprintf("%s[%d]", path, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected true or false, got %s", kindName(n))
		return false
	}
	switch n.Value {
	case "true":
		return true
	case "false":
		return false
	}
	d.fail(n, path, "expected true or false, got %q", n.Value)
	return false
}

var ruleKeys = []string{"id", "description", "category", "severity", "literals", "case_sensitive", "whole_words", "regex", "json", "exclude", "fields"}

// parsePack decodes and validates the syntax of one pack. It checks every
// value that can be checked without the other packs; Compile checks ids
// across packs.
func parsePack(f PackFile) (*pack, error) {
	d := &decoder{file: f.Name}
	p := &pack{name: f.Name}
	var doc yaml.Node
	if err := yaml.Unmarshal(f.Data, &doc); err != nil {
		return nil, &ConfigError{File: f.Name, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return p, nil // an empty file is an empty pack
	}
	root := doc.Content[0]
	d.mapping(root, "", []string{"rules", "disable"}, func(key string, v *yaml.Node, path string) {
		switch key {
		case "rules":
			if v.Kind != yaml.SequenceNode {
				d.fail(v, path, "expected a list of rules, got %s", kindName(v))
				return
			}
			for i, rn := range v.Content {
				rpath := fmt.Sprintf("rules[%d]", i)
				r, ok := d.rule(rn, rpath, f.Name)
				if ok {
					p.rules = append(p.rules, r)
					p.lines = append(p.lines, rn.Line)
					p.paths = append(p.paths, rpath)
				}
			}
		case "disable":
			if v.Kind != yaml.SequenceNode {
				d.fail(v, path, "expected a list of rule ids, got %s", kindName(v))
				return
			}
			for i, e := range v.Content {
				if s, ok := d.scalar(e, fmt.Sprintf("disable[%d]", i)); ok {
					p.disable = append(p.disable, s)
					p.disLine = append(p.disLine, e.Line)
				}
			}
		}
	})
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return p, nil
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

func (d *decoder) rule(n *yaml.Node, path, origin string) (Rule, bool) {
	r := Rule{Severity: SeverityError, Origin: origin}
	before := len(d.errs)
	hasCategory := false
	var idNode *yaml.Node
	d.mapping(n, path, ruleKeys, func(key string, v *yaml.Node, vpath string) {
		switch key {
		case "id":
			idNode = v
			if s, ok := d.scalar(v, vpath); ok {
				if !idPattern.MatchString(s) {
					d.fail(v, vpath, "invalid rule id %q; use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", s)
				}
				r.ID = s
			}
		case "description":
			r.Description, _ = d.scalar(v, vpath)
		case "category":
			hasCategory = true
			if s, ok := d.scalar(v, vpath); ok {
				c, ok := ParseCategory(s)
				if !ok {
					d.fail(v, vpath, "unknown category %q; valid categories are auth_failure, token_expired, error", s)
				}
				r.Category = c
			}
		case "severity":
			if s, ok := d.scalar(v, vpath); ok {
				sev, ok := ParseSeverity(s)
				if !ok {
					d.fail(v, vpath, "unknown severity %q; valid severities are info, warning, error, critical", s)
				}
				r.Severity = sev
			}
		case "literals":
			r.Literals = d.strings(v, vpath)
			for i, l := range r.Literals {
				if len(l) < minLiteral {
					d.fail(v, fmt.Sprintf("%s[%d]", vpath, i), "literal %q is shorter than %d bytes and would make the prefilter useless; use a longer string", l, minLiteral)
				}
			}
		case "case_sensitive":
			r.CaseSensitive = d.boolean(v, vpath)
		case "whole_words":
			r.WholeWords = d.boolean(v, vpath)
		case "regex":
			if s, ok := d.scalar(v, vpath); ok {
				d.checkRegex(v, vpath, s)
				r.Regex = s
			}
		case "json":
			r.JSON = d.jsonConditions(v, vpath)
		case "exclude":
			d.mapping(v, vpath, []string{"literals", "regex"}, func(key string, v *yaml.Node, epath string) {
				switch key {
				case "literals":
					r.Exclude.Literals = d.strings(v, epath)
					for i, l := range r.Exclude.Literals {
						if l == "" {
							d.fail(v, fmt.Sprintf("%s[%d]", epath, i), "empty literal excludes every line")
						}
					}
				case "regex":
					if s, ok := d.scalar(v, epath); ok {
						d.checkRegex(v, epath, s)
						r.Exclude.Regex = s
					}
				}
			})
		case "fields":
			r.Fields = d.strings(v, vpath)
			for i, name := range r.Fields {
				fpath := fmt.Sprintf("%s[%d]", vpath, i)
				switch {
				case !fieldName.MatchString(name):
					d.fail(v, fpath, "invalid field name %q; use letters, digits, '_' and '.'", name)
				case isSecretFieldName(name):
					d.fail(v, fpath, "field %q may carry a credential and cannot be extracted; rename the capture group", name)
				}
			}
		}
	})
	if n.Kind != yaml.MappingNode {
		return r, false
	}
	if idNode == nil {
		d.fail(n, path+".id", "missing rule id")
	}
	if !hasCategory {
		d.fail(n, path+".category", "missing category; valid categories are auth_failure, token_expired, error")
	}
	if len(r.Literals) == 0 && r.Regex == "" && len(r.JSON) == 0 {
		d.fail(n, path, "rule %q has no condition; set literals, regex or json", r.ID)
	} else if len(d.errs) == before && len(r.Literals) == 0 && derivedLiterals(r) == nil {
		d.failHint(n, path+".literals", fmt.Sprintf("add literals of at least %d bytes, one of which every matching line contains", minLiteral),
			"missing literals: the regex and json conditions of rule %q contain no fixed string for the prefilter", r.ID)
	}
	return r, len(d.errs) == before
}

var fieldName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func (d *decoder) jsonConditions(n *yaml.Node, path string) []FieldCondition {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a list of field conditions, got %s", kindName(n))
		return nil
	}
	var out []FieldCondition
	for i, cn := range n.Content {
		cpath := fmt.Sprintf("%s[%d]", path, i)
		var c FieldCondition
		d.mapping(cn, cpath, []string{"field", "equals", "contains"}, func(key string, v *yaml.Node, vpath string) {
			switch key {
			case "field":
				if s, ok := d.scalar(v, vpath); ok {
					if !fieldName.MatchString(s) {
						d.fail(v, vpath, "invalid field name %q; use letters, digits, '_' and '.' for nesting", s)
					}
					c.Field = s
				}
			case "equals":
				c.Equals = d.strings(v, vpath)
			case "contains":
				c.Contains = d.strings(v, vpath)
				for j, s := range c.Contains {
					if s == "" {
						d.fail(v, fmt.Sprintf("%s[%d]", vpath, j), "empty string is contained in every value; remove it")
					}
				}
			}
		})
		if cn.Kind == yaml.MappingNode && c.Field == "" {
			d.fail(cn, cpath+".field", "missing field name")
		}
		if len(c.Equals) > 0 && len(c.Contains) > 0 {
			d.fail(cn, cpath, "equals and contains are mutually exclusive; write two conditions")
		}
		out = append(out, c)
	}
	return out
}

// checkRegex reports an invalid RE2 expression, with a hint when it uses a
// Perl or PCRE feature that RE2 lacks.
func (d *decoder) checkRegex(n *yaml.Node, path, expr string) {
	if expr == "" {
		d.fail(n, path, "empty regular expression matches every line; remove it or write a pattern")
		return
	}
	_, err := syntax.Parse(expr, syntax.Perl)
	if err == nil {
		return
	}
	msg := err.Error()
	var se *syntax.Error
	if errors.As(err, &se) {
		msg = fmt.Sprintf("%s: %q", se.Code, se.Expr)
	}
	d.failHint(n, path, regexHint(expr, err), "invalid regular expression %q: %s", expr, msg)
}

func regexHint(expr string, err error) string {
	var se *syntax.Error
	if !errors.As(err, &se) {
		return ""
	}
	switch {
	case strings.Contains(expr, "(?=") || strings.Contains(expr, "(?!") ||
		strings.Contains(expr, "(?<=") || strings.Contains(expr, "(?<!"):
		return "RE2 has no lookahead or lookbehind; match the wider text and put what must not appear under exclude"
	case strings.Contains(expr, "(?>"):
		return "RE2 has no atomic groups; use a plain group (?:...), since RE2 never backtracks"
	case se.Code == syntax.ErrInvalidEscape && backref.MatchString(se.Expr):
		return "RE2 has no backreferences; match each occurrence explicitly"
	case se.Code == syntax.ErrInvalidRepeatOp && (strings.HasSuffix(se.Expr, "++") || strings.HasSuffix(se.Expr, "*+") || strings.HasSuffix(se.Expr, "?+")):
		return "RE2 has no possessive quantifiers; drop the trailing +, since RE2 never backtracks"
	case se.Code == syntax.ErrInvalidPerlOp && strings.Contains(expr, "(?P="):
		return "RE2 has no backreferences; match each occurrence explicitly"
	case se.Code == syntax.ErrInvalidPerlOp && (strings.Contains(expr, "(?#") || strings.Contains(expr, "(?|")):
		return "RE2 has no inline comments or branch reset groups"
	}
	return ""
}

var backref = regexp.MustCompile(`^\\[1-9]|^\\[gk]`)
