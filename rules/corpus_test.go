package rules

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// labelledLine is one row of testdata/labelled.tsv.
type labelledLine struct {
	row         int
	family      string
	authFailure bool
	expiry      bool
	text        string
}

func readLabelled(t *testing.T) []labelledLine {
	t.Helper()
	f, err := os.Open("testdata/labelled.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []labelledLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	row := 0
	for sc.Scan() {
		row++
		if row == 1 {
			continue // header
		}
		parts := strings.SplitN(sc.Text(), "\t", 5)
		if len(parts) != 5 {
			t.Fatalf("labelled.tsv:%d: want 5 tab-separated columns, got %d", row, len(parts))
		}
		yes := func(col int) bool {
			switch parts[col] {
			case "yes":
				return true
			case "no":
				return false
			}
			t.Fatalf("labelled.tsv:%d: column %d is %q, want yes or no", row, col+1, parts[col])
			return false
		}
		out = append(out, labelledLine{row: row, family: parts[0], authFailure: yes(1), expiry: yes(2), text: parts[4]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// score counts a binary classifier's outcomes.
type score struct{ tp, fp, fn, tn int }

func (s *score) add(want, got bool) {
	switch {
	case want && got:
		s.tp++
	case !want && got:
		s.fp++
	case want && !got:
		s.fn++
	default:
		s.tn++
	}
}

func (s score) precision() float64 {
	if s.tp+s.fp == 0 {
		return 1
	}
	return float64(s.tp) / float64(s.tp+s.fp)
}

func (s score) recall() float64 {
	if s.tp+s.fn == 0 {
		return 1
	}
	return float64(s.tp) / float64(s.tp+s.fn)
}

func (s score) String() string {
	return fmt.Sprintf("precision %.3f recall %.3f (tp %d, fp %d, fn %d, tn %d)", s.precision(), s.recall(), s.tp, s.fp, s.fn, s.tn)
}

// TestCorpusPrecisionRecall measures the default pack on the labelled
// corpus for "auth failure or expiry" and for "expiry" alone, and reports
// the figures of the grep that people use today for comparison.
func TestCorpusPrecisionRecall(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	seed := regexp.MustCompile(`(ERROR|Auth|401)`)
	lines := readLabelled(t)

	var auth, expiry, grepAuth, grepExpiry score
	var matches []Match
	for _, l := range lines {
		matches = m.Match(&Line{Text: []byte(l.text)}, matches[:0])
		gotAuth, gotExpiry := false, false
		rule := "no match"
		if len(matches) > 0 {
			gotAuth = matches[0].Category.Is(AuthFailure)
			gotExpiry = matches[0].Category == TokenExpired
			rule = matches[0].RuleID
		}
		wantAuth := l.authFailure || l.expiry
		auth.add(wantAuth, gotAuth)
		expiry.add(l.expiry, gotExpiry)
		if wantAuth != gotAuth || l.expiry != gotExpiry {
			t.Logf("labelled.tsv:%d %s: want auth=%v expiry=%v, got auth=%v expiry=%v (%s): %s",
				l.row, l.family, wantAuth, l.expiry, gotAuth, gotExpiry, rule, l.text)
		}
		g := seed.MatchString(l.text)
		grepAuth.add(wantAuth, g)
		grepExpiry.add(l.expiry, g)
	}

	t.Logf("%d lines", len(lines))
	t.Logf("default pack, auth failure or expiry: %v", auth)
	t.Logf("default pack, expiry:                 %v", expiry)
	t.Logf(`grep -E "(ERROR|Auth|401)", auth failure or expiry: %v`, grepAuth)
	t.Logf(`grep -E "(ERROR|Auth|401)", expiry:                 %v`, grepExpiry)
	for name, s := range map[string]score{"auth failure or expiry": auth, "expiry": expiry} {
		if s.precision() < 0.98 {
			t.Errorf("%s: precision %.3f, want >= 0.98", name, s.precision())
		}
		if s.recall() < 0.95 {
			t.Errorf("%s: recall %.3f, want >= 0.95", name, s.recall())
		}
	}
}

// TestCorpusNoCrLfDifference checks that a trailing carriage return does
// not change a line's classification.
func TestCorpusCRLF(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range readLabelled(t) {
		a := m.Match(&Line{Text: []byte(l.text)}, nil)
		b := m.Match(&Line{Text: []byte(l.text + "\r")}, nil)
		if len(a) != len(b) || len(a) > 0 && (a[0].RuleID != b[0].RuleID || !bytes.Equal(a[0].Line.Text, b[0].Line.Text)) {
			t.Errorf("labelled.tsv:%d: with a trailing \\r the match changed from %v to %v", l.row, a, b)
		}
	}
}
