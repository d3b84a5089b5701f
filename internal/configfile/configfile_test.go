package configfile

import (
	"testing"
	"time"
)

type testSlack struct {
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	Channel   string `yaml:"channel"`
}

type testConfig struct {
	Namespaces []string      `yaml:"namespaces"`
	Window     time.Duration `yaml:"window"`
	Slack      *testSlack    `yaml:"slack"`
	Files      []string      `yaml:"files" config:"file"`
	Ratio      float64       `yaml:"ratio"`
	Skip       string        `yaml:"-"`
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"closest key", "namspaces: [a]\n",
			`c.yaml:1: namspaces: unknown key "namspaces"; did you mean namespaces? valid keys are namespaces, window, slack, files, ratio`},
		{"no close key", "zzz: 1\n",
			`c.yaml:1: zzz: unknown key "zzz"; valid keys are namespaces, window, slack, files, ratio`},
		{"skipped field", "skip: x\n",
			`c.yaml:1: skip: unknown key "skip"; valid keys are namespaces, window, slack, files, ratio`},
		{"inline secret", "slack:\n  token: xoxb-1\n",
			`c.yaml:2: slack.token: unknown key "token"; use token_file or token_env; secrets are never inline`},
		{"duplicate key", "ratio: 1\nratio: 2\n",
			`c.yaml:2: ratio: duplicate key "ratio"; keep one of them`},
		{"duration", "window: 5 minutes\n",
			`c.yaml:1: window: invalid duration "5 minutes"; use a Go duration such as 5m, 30s or 1h30m`},
		{"duration number", "window: 0\n",
			`c.yaml:1: window: invalid duration 0: a duration needs a unit; use a Go duration such as 5m, 30s or 1h30m`},
		{"duration list", "window: [1m]\n",
			`c.yaml:1: window: expected a duration, got a list; use a Go duration such as 5m, 30s or 1h30m`},
		{"number", "ratio: half\n",
			`c.yaml:1: ratio: invalid number "half"; use a number such as 0.5`},
		{"string from mapping", "slack: {channel: {a: b}}\n",
			`c.yaml:1: slack.channel: expected a string, got a mapping; write a single value`},
		{"list item", "namespaces: [a, [b]]\n",
			`c.yaml:1: namespaces[1]: expected a string, got a list; write a single value`},
		{"two documents", "ratio: 1\n---\nratio: 2\n",
			`c.yaml:2: more than one YAML document; keep the whole configuration in one`},
		{"syntax", "ratio: [\n",
			`c.yaml: yaml: line 1: did not find expected node content`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c testConfig
			_, err := Decode("c.yaml", []byte(tc.doc), &c)
			if err == nil {
				t.Fatalf("Decode succeeded, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error = %q\nwant    %q", err, tc.want)
			}
		})
	}
}

func TestDecodeRefs(t *testing.T) {
	c := testConfig{Ratio: 0.25}
	doc := "window: 1m\nslack: {token_file: token, token_env: SLACK_TOKEN}\nfiles: [a.yaml, /abs/b.yaml]\n"
	refs, err := Decode("c.yaml", []byte(doc), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Window != time.Minute || c.Ratio != 0.25 {
		t.Errorf("window = %s, ratio = %g; want 1m and the default 0.25", c.Window, c.Ratio)
	}
	ResolvePaths(refs, "/etc/authwatch")
	var got []string
	for _, r := range refs {
		kind := "file"
		if r.Kind == Env {
			kind = "env"
		}
		got = append(got, kind+" "+r.Path+"="+*r.Value)
	}
	want := []string{
		"file slack.token_file=/etc/authwatch/token",
		"env slack.token_env=SLACK_TOKEN",
		"file files[0]=/etc/authwatch/a.yaml",
		"file files[1]=/abs/b.yaml",
	}
	if len(got) != len(want) {
		t.Fatalf("refs = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("refs[%d] = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestDecodeMergeKey(t *testing.T) {
	doc := "base: &base {channel: \"#a\"}\nslack:\n  <<: *base\n  token_env: T\n"
	var c struct {
		Base  testSlack  `yaml:"base"`
		Slack *testSlack `yaml:"slack"`
	}
	if _, err := Decode("c.yaml", []byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.Slack == nil || c.Slack.Channel != "#a" || c.Slack.TokenEnv != "T" {
		t.Errorf("slack = %+v, want the merged channel #a and token_env T", c.Slack)
	}

	bad := "base: &base {chanel: \"#a\"}\nslack:\n  <<: *base\n"
	_, err := Decode("c.yaml", []byte(bad), &c)
	want := `c.yaml:1: base.chanel: unknown key "chanel"; did you mean channel? valid keys are token_file, token_env, channel` + "\n" +
		`c.yaml:1: slack.chanel: unknown key "chanel"; did you mean channel? valid keys are token_file, token_env, channel`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}

func TestDecodeEmptyKeepsDefaults(t *testing.T) {
	for _, doc := range []string{"", "# only a comment\n", "~\n"} {
		c := testConfig{Ratio: 0.5}
		if _, err := Decode("c.yaml", []byte(doc), &c); err != nil || c.Ratio != 0.5 {
			t.Errorf("Decode(%q): ratio %g, err %v; want 0.5 and no error", doc, c.Ratio, err)
		}
	}
}
