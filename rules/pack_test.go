package rules

import (
	"regexp"
	"strings"
	"testing"
)

// TestDefaultLiteralsCoverRegex checks on every corpus line that when a
// default rule's regex matches, one of its literals occurs too. A literal
// list that misses a wording of its regex would hide those lines from the
// rule without any error.
func TestDefaultLiteralsCoverRegex(t *testing.T) {
	rs, err := DefaultRules()
	if err != nil {
		t.Fatal(err)
	}
	lines := readLabelled(t)
	for _, r := range rs {
		if r.Regex == "" || len(r.Literals) == 0 {
			continue
		}
		flags := "(?i)"
		if r.CaseSensitive {
			flags = ""
		}
		re := regexp.MustCompile(flags + r.Regex)
		for _, l := range lines {
			if !re.MatchString(l.text) {
				continue
			}
			hit := false
			for _, lit := range r.Literals {
				if r.CaseSensitive && strings.Contains(l.text, lit) ||
					!r.CaseSensitive && indexFold([]byte(l.text), []byte(lit)) >= 0 {
					hit = true
					break
				}
			}
			if !hit {
				t.Errorf("rule %s: regex matches labelled.tsv:%d but none of its literals occur: %s", r.ID, l.row, l.text)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name  string
		packs []PackFile
		opts  Options
		want  string
	}{
		{
			name:  "unknown key",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    literals: [abc]\n    pattern: x\n")}},
			want:  `u.yaml:5: rules[0].pattern: unknown key "pattern"; valid keys are id, description, category, severity, literals, case_sensitive, whole_words, regex, json, exclude, fields`,
		},
		{
			name:  "unknown top-level key",
			packs: []PackFile{{"u.yaml", []byte("rule:\n  - id: a\n")}},
			want:  `u.yaml:1: rule: unknown key "rule"; valid keys are rules, disable`,
		},
		{
			name:  "lookahead",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: 'token(?=x)'\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "token(?=x)": invalid or unsupported Perl syntax: "(?="; RE2 has no lookahead or lookbehind; match the wider text and put what must not appear under exclude`,
		},
		{
			name:  "lookbehind",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: '(?<!not )expired'\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "(?<!not )expired": invalid named capture: "(?<!not )expired"; RE2 has no lookahead or lookbehind; match the wider text and put what must not appear under exclude`,
		},
		{
			name:  "backreference",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: '(token) \\1'\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "(token) \\1": invalid escape sequence: "\\1"; RE2 has no backreferences; match each occurrence explicitly`,
		},
		{
			name:  "possessive",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: 'token\\w++'\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "token\\w++": invalid nested repetition operator: "++"; RE2 has no possessive quantifiers; drop the trailing +, since RE2 never backtracks`,
		},
		{
			name:  "atomic group",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: '(?>token)'\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "(?>token)": invalid or unsupported Perl syntax: "(?>"; RE2 has no atomic groups; use a plain group (?:...), since RE2 never backtracks`,
		},
		{
			name:  "plain syntax error",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    regex: 'token ('\n")}},
			want:  `u.yaml:4: rules[0].regex: invalid regular expression "token (": missing closing ): "token ("`,
		},
		{
			name:  "invalid exclude regex",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    literals: [token]\n    exclude:\n      regex: '[a-'\n")}},
			want:  `u.yaml:6: rules[0].exclude.regex: invalid regular expression "[a-": missing closing ]: "[a-"`,
		},
		{
			name:  "duplicate id in one file",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    literals: [abc]\n  - id: a\n    category: error\n    literals: [def]\n")}},
			want:  `u.yaml:5: rules[1].id: duplicate rule id "a", first defined at line 2`,
		},
		{
			name: "duplicate id across files",
			packs: []PackFile{
				{"one.yaml", []byte("rules:\n  - id: a\n    category: auth_failure\n    literals: [abc]\n")},
				{"two.yaml", []byte("rules:\n  - id: a\n    category: error\n    literals: [def]\n")},
			},
			want: `two.yaml:2: rules[0].id: duplicate rule id "a", already defined in one.yaml`,
		},
		{
			name:  "unknown category",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: expired\n    literals: [abc]\n")}},
			want:  `u.yaml:3: rules[0].category: unknown category "expired"; valid categories are auth_failure, token_expired, error`,
		},
		{
			name:  "unknown severity",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    severity: high\n    literals: [abc]\n")}},
			want:  `u.yaml:4: rules[0].severity: unknown severity "high"; valid severities are info, warning, error, critical`,
		},
		{
			name:  "missing id and category",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - literals: [abc]\n")}},
			want: "u.yaml:2: rules[0].id: missing rule id\n" +
				"u.yaml:2: rules[0].category: missing category; valid categories are auth_failure, token_expired, error",
		},
		{
			name:  "no condition",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n")}},
			want:  `u.yaml:2: rules[0]: rule "a" has no condition; set literals, regex or json`,
		},
		{
			name:  "short literal",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    literals: [token, ab]\n")}},
			want:  `u.yaml:4: rules[0].literals[1]: literal "ab" is shorter than 3 bytes and would make the prefilter useless; use a longer string`,
		},
		{
			name:  "regex without literals",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    regex: '\\d+ (?:ms|s)'\n")}},
			want:  `u.yaml:2: rules[0].literals: missing literals: the regex and json conditions of rule "a" contain no fixed string for the prefilter; add literals of at least 3 bytes, one of which every matching line contains`,
		},
		{
			name:  "secret field",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    regex: 'token=(?P<token>\\S+)'\n    fields: [token]\n")}},
			want:  `u.yaml:5: rules[0].fields[0]: field "token" may carry a credential and cannot be extracted; rename the capture group`,
		},
		{
			name:  "json equals and contains",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    json:\n      - field: msg\n        equals: [x]\n        contains: [expired]\n")}},
			want:  `u.yaml:5: rules[0].json[0]: equals and contains are mutually exclusive; write two conditions`,
		},
		{
			name:  "json missing field",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    json:\n      - equals: [401]\n")}},
			want:  `u.yaml:5: rules[0].json[0].field: missing field name`,
		},
		{
			name:  "wrong type",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: [error]\n    literals: [abc]\n")}},
			want:  `u.yaml:3: rules[0].category: expected a string, got a list`,
		},
		{
			name:  "bad boolean",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n    category: error\n    literals: [abc]\n    case_sensitive: maybe\n")}},
			want:  `u.yaml:5: rules[0].case_sensitive: expected true or false, got "maybe"`,
		},
		{
			name:  "rules not a list",
			packs: []PackFile{{"u.yaml", []byte("rules: {id: a}\n")}},
			want:  `u.yaml:1: rules: expected a list of rules, got a mapping`,
		},
		{
			name:  "invalid YAML",
			packs: []PackFile{{"u.yaml", []byte("rules:\n  - id: a\n   category: error\n")}},
			want:  `u.yaml: invalid YAML: line 1: did not find expected '-' indicator`,
		},
		{
			name:  "disable unknown id in pack",
			packs: []PackFile{{"u.yaml", []byte("disable: [token-expired, no-such-rule]\n")}},
			want:  "u.yaml:1: disable[1]: unknown rule id \"no-such-rule\"; run `authwatch rules list` for the ids",
		},
		{
			name: "disable unknown id in options",
			opts: Options{Disable: []string{"no-such-rule"}},
			want: "rules.disable[0]: unknown rule id \"no-such-rule\"; run `authwatch rules list` for the ids",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Packs = tc.packs
			_, err := Compile(opts)
			if err == nil {
				t.Fatal("Compile succeeded, want an error")
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestCompileOverrideAndDisable(t *testing.T) {
	pack := []byte(`rules:
  - id: token-expired
    category: token_expired
    literals: [only this wording expired]
  - id: town-rejected
    category: auth_failure
    literals: [town rejected]
disable: [error-word]
`)
	m, err := Compile(Options{Packs: []PackFile{{"town.yaml", pack}}, Disable: []string{"error-level-json"}})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]Rule{}
	for _, r := range m.Rules() {
		ids[r.ID] = r
	}
	if _, ok := ids["error-word"]; ok {
		t.Error("error-word is still active after the pack disabled it")
	}
	if _, ok := ids["error-level-json"]; ok {
		t.Error("error-level-json is still active after Options.Disable")
	}
	if r := ids["token-expired"]; r.Origin != "town.yaml" {
		t.Errorf("token-expired comes from %q, want the override from town.yaml", r.Origin)
	}
	if r := ids["town-rejected"]; r.Origin != "town.yaml" {
		t.Errorf("town-rejected comes from %q, want town.yaml", r.Origin)
	}
	tests := []struct{ line, want string }{
		{"TokenExpiredError: jwt expired", "jwt-invalid"}, // the override no longer matches; the next rule does
		{"only this wording expired", "token-expired"},
		{"the town rejected us", "town-rejected"},
		{"ERROR nothing to see", ""},
	}
	for _, tc := range tests {
		got := m.Match(&Line{Text: []byte(tc.line)}, nil)
		id := ""
		if len(got) > 0 {
			id = got[0].RuleID
		}
		if id != tc.want {
			t.Errorf("%q matched %q, want %q", tc.line, id, tc.want)
		}
	}
}

func TestCompileEmptyPack(t *testing.T) {
	m, err := Compile(Options{Packs: []PackFile{{"empty.yaml", nil}}})
	if err != nil {
		t.Fatal(err)
	}
	def, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Rules()) != len(def.Rules()) {
		t.Errorf("an empty pack changed the rule count from %d to %d", len(def.Rules()), len(m.Rules()))
	}
}
