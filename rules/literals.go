package rules

import (
	"regexp/syntax"
	"slices"
	"unicode/utf8"
)

// minLiteral is the shortest literal the prefilter accepts. Shorter ones
// would hit on most lines and send them all to RE2.
const minLiteral = 3

// maxLiteralSet bounds the cross products built while deriving literals.
const maxLiteralSet = 64

// litSet is a set of strings such that every match of an expression
// contains at least one of them. exact means the expression matches
// exactly these strings, so neighbours can be concatenated onto them.
type litSet struct {
	strs  []string
	exact bool
}

// score is the length of the shortest string: the prefilter is as selective
// as its weakest literal.
func (s litSet) score() int {
	if len(s.strs) == 0 {
		return 0
	}
	m := len(s.strs[0])
	for _, x := range s.strs[1:] {
		m = min(m, len(x))
	}
	return m
}

// regexLiterals derives prefilter literals from an RE2 expression. It
// returns nil when every match need not contain a string of at least
// minLiteral bytes.
//
// NOTE: the prefilter folds ASCII case only, so a case-insensitive
// expression that relies on Unicode folding (the Kelvin sign for "k")
// may miss such lines.
func regexLiterals(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	set, ok := literalsOf(re.Simplify())
	if !ok || set.score() < minLiteral {
		return nil
	}
	return set.strs
}

func literalsOf(re *syntax.Regexp) (litSet, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		buf := make([]byte, 0, len(re.Rune)*utf8.UTFMax)
		for _, r := range re.Rune {
			buf = utf8.AppendRune(buf, r)
		}
		return litSet{strs: []string{string(buf)}, exact: true}, true
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText,
		syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return litSet{strs: []string{""}, exact: true}, true
	case syntax.OpCapture:
		return literalsOf(re.Sub[0])
	case syntax.OpCharClass:
		var strs []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				strs = append(strs, string(r))
				if len(strs) > 8 {
					return litSet{}, false
				}
			}
		}
		return litSet{strs: dedupFold(strs), exact: true}, true
	case syntax.OpPlus:
		s, ok := literalsOf(re.Sub[0])
		s.exact = false
		return s, ok
	case syntax.OpRepeat:
		if re.Min < 1 {
			return litSet{}, false
		}
		s, ok := literalsOf(re.Sub[0])
		s.exact = s.exact && re.Min == 1 && re.Max == 1
		return s, ok
	case syntax.OpAlternate:
		out := litSet{exact: true}
		for _, sub := range re.Sub {
			s, ok := literalsOf(sub)
			if !ok {
				return litSet{}, false
			}
			out.strs = append(out.strs, s.strs...)
			out.exact = out.exact && s.exact
		}
		out.strs = dedupFold(out.strs)
		return out, true
	case syntax.OpConcat:
		return concatLiterals(re.Sub)
	}
	return litSet{}, false
}

// concatLiterals joins runs of exact neighbours by cross product and keeps
// the most selective candidate.
func concatLiterals(subs []*syntax.Regexp) (litSet, bool) {
	var best litSet
	found := false
	var run litSet
	inRun := false
	allExact := true
	consider := func(s litSet) {
		if !found || s.score() > best.score() {
			best, found = s, true
		}
	}
	for _, sub := range subs {
		s, ok := literalsOf(sub)
		if !ok || !s.exact {
			allExact = false
		}
		if !ok {
			if inRun {
				consider(litSet{strs: run.strs})
			}
			inRun = false
			continue
		}
		if !s.exact {
			if inRun {
				consider(litSet{strs: run.strs})
			}
			consider(s)
			inRun = false
			continue
		}
		if !inRun {
			run, inRun = s, true
			continue
		}
		if len(run.strs)*len(s.strs) > maxLiteralSet {
			allExact = false
			consider(litSet{strs: run.strs})
			run = s
			continue
		}
		var joined []string
		for _, a := range run.strs {
			for _, b := range s.strs {
				joined = append(joined, a+b)
			}
		}
		run = litSet{strs: dedupFold(joined), exact: true}
	}
	if inRun {
		if allExact {
			return run, true // the whole concatenation was exact
		}
		consider(litSet{strs: run.strs})
	}
	if !found {
		return litSet{}, false
	}
	best.exact = false
	return best, true
}

// dedupFold removes strings that equal another one when ASCII case is
// ignored.
func dedupFold(strs []string) []string {
	out := strs[:0:0]
	for _, s := range strs {
		if !slices.ContainsFunc(out, func(o string) bool { return equalFoldString(o, s) }) {
			out = append(out, s)
		}
	}
	return out
}

// maxConjunctions bounds the alternatives that regexConditions tracks.
const maxConjunctions = 64

// conjunction is a list of literal sets that must all occur in a line: one
// string of each set.
type conjunction []litSet

// regexConditions derives a finer prefilter than regexLiterals: a list of
// conjunctions, one of which every match satisfies. For
// `(?:invalid|bad) (?:token|api key)` it returns one conjunction of two
// sets, so a line with "token" alone is not a candidate. It returns nil
// when some alternative of the expression needs no literal.
func regexConditions(expr string) []conjunction {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	dnf := conditionsOf(re.Simplify())
	if len(dnf) == 0 {
		return nil
	}
	for _, c := range dnf {
		if len(c) == 0 {
			return nil
		}
	}
	return dnf
}

// conditionsOf returns the conjunctions of re; a conjunction without sets
// means "no requirement".
func conditionsOf(re *syntax.Regexp) []conjunction {
	switch re.Op {
	case syntax.OpCapture:
		return conditionsOf(re.Sub[0])
	case syntax.OpPlus:
		return conditionsOf(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return conditionsOf(re.Sub[0])
		}
	case syntax.OpAlternate:
		var out []conjunction
		for _, sub := range re.Sub {
			out = append(out, conditionsOf(sub)...)
			if len(out) > maxConjunctions {
				return single(re)
			}
		}
		return out
	case syntax.OpConcat:
		return concatConditions(re)
	default:
		return single(re)
	}
	return []conjunction{{}}
}

// single wraps the literal set of re, if selective enough, as the only
// conjunction.
func single(re *syntax.Regexp) []conjunction {
	s, ok := literalsOf(re)
	if !ok || s.score() < minLiteral {
		return []conjunction{{}}
	}
	return []conjunction{{litSet{strs: s.strs}}}
}

// concatConditions multiplies the conditions of the parts of a
// concatenation. Runs of exact parts are joined first, as concatLiterals
// does, so that "40" and [13] become "401" and "403".
func concatConditions(re *syntax.Regexp) []conjunction {
	out := []conjunction{{}}
	var run litSet
	inRun := false
	flush := func() {
		if inRun && run.score() >= minLiteral {
			for i := range out {
				out[i] = append(slices.Clip(out[i]), litSet{strs: run.strs})
			}
		}
		inRun = false
	}
	for _, sub := range re.Sub {
		if s, ok := literalsOf(sub); ok && s.exact {
			if inRun && len(run.strs)*len(s.strs) <= maxLiteralSet {
				var joined []string
				for _, a := range run.strs {
					for _, b := range s.strs {
						joined = append(joined, a+b)
					}
				}
				run = litSet{strs: dedupFold(joined), exact: true}
				continue
			}
			flush()
			run, inRun = s, true
			continue
		}
		flush()
		sc := conditionsOf(sub)
		if len(out)*len(sc) > maxConjunctions {
			return single(re)
		}
		var next []conjunction
		for _, a := range out {
			for _, b := range sc {
				next = append(next, append(slices.Clip(a), b...))
			}
		}
		out = next
	}
	flush()
	return out
}

// leadingLiterals returns the strings one of which every match of expr
// starts with, and whether a \b comes before them. ok is false when a
// match may start some other way.
func leadingLiterals(expr string) (strs []string, wordBoundary, ok bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, false, false
	}
	re = re.Simplify()
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	i := 0
	for i < len(subs) && subs[i].Op == syntax.OpWordBoundary {
		wordBoundary = true
		i++
	}
	if i == len(subs) {
		return nil, false, false
	}
	s, ok := literalsOf(subs[i])
	if !ok || !s.exact || len(s.strs) == 0 || slices.Contains(s.strs, "") {
		return nil, false, false
	}
	return s.strs, wordBoundary, true
}
