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
