package rules

import (
	"bytes"
	"testing"
)

// FuzzCompile feeds arbitrary packs to Compile. It must return a matcher
// or an error, never panic, and a matcher it returns must handle lines.
func FuzzCompile(f *testing.F) {
	f.Add([]byte("rules:\n  - id: a\n    category: auth_failure\n    literals: [denied]\n"))
	f.Add([]byte("rules:\n  - id: a\n    category: error\n    regex: '(?P<status>40[13]) unauthorized'\n    fields: [status]\n"))
	f.Add([]byte("rules:\n  - id: a\n    category: token_expired\n    json:\n      - {field: msg, contains: [expired]}\n"))
	f.Add([]byte("rules:\n  - id: a\n    category: error\n    regex: 'token(?=x)'\n"))
	f.Add([]byte("disable: [token-expired]\n"))
	f.Add([]byte("rules: [{id: x, category: error, literals: [abc], exclude: {literals: [abcd], regex: 'a+'}}]"))
	lines := [][]byte{
		[]byte("denied 401 unauthorized"),
		[]byte(`{"msg":"token expired","status":401}`),
		[]byte("\xff\x00 abc"),
	}
	f.Fuzz(func(t *testing.T, pack []byte) {
		m, err := Compile(Options{NoDefault: true, Packs: []PackFile{{"fuzz.yaml", pack}}})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for _, l := range lines {
			m.Match(&Line{Text: l}, nil)
			m.MatchAll(&Line{Text: l}, nil)
		}
	})
}

// FuzzMatch feeds arbitrary lines to the default pack and checks that
// Match agrees with MatchAll, ignores a trailing "\r" and copies the text.
func FuzzMatch(f *testing.F) {
	for _, l := range benchLines {
		f.Add([]byte(l))
	}
	f.Add([]byte("TokenExpiredError: jwt expired"))
	f.Add([]byte(`{"detail":"Token is invalid or expired","code":"token_not_valid"}`))
	f.Add([]byte("\xff\xfe 401 Unauthorized \x00"))
	f.Add([]byte(`{"http":{"response":{"status_code":401}}}`))
	m, err := Default()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		one := m.Match(&Line{Text: text}, nil)
		all := m.MatchAll(&Line{Text: text}, nil)
		if len(one) > 1 {
			t.Fatalf("Match returned %d matches", len(one))
		}
		if (len(one) == 0) != (len(all) == 0) || len(one) == 1 && one[0].RuleID != all[0].RuleID {
			t.Fatalf("Match %v disagrees with the first of MatchAll %v", one, all)
		}
		if len(one) == 1 && !bytes.Equal(one[0].Line.Text, trimCR(text)) {
			t.Fatalf("match text %q, want %q", one[0].Line.Text, trimCR(text))
		}
		if len(text) == 0 || text[len(text)-1] != '\r' {
			cr := m.Match(&Line{Text: append(bytes.Clone(text), '\r')}, nil)
			if len(cr) != len(one) || len(one) == 1 && cr[0].RuleID != one[0].RuleID {
				t.Fatalf("a trailing \\r changed the match from %v to %v", one, cr)
			}
		}
		_ = Mask(text)
	})
}
