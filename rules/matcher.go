package rules

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strings"
	"sync"
)

//go:embed default.yaml
var defaultPack []byte

// DefaultPackName is the name under which errors and `rules list` report
// the embedded pack.
const DefaultPackName = "default"

// Options selects the rules a Matcher runs.
type Options struct {
	// Packs are user rule packs, applied in order on top of the default
	// pack: a rule with a new id is added, a rule with the id of a default
	// rule replaces it, and a pack's disable list turns rules off.
	Packs []PackFile
	// Disable turns off the rules with these ids, as a pack's disable list.
	Disable []string
	// DisableName is the name that errors give the Disable list:
	// "rules.disable" for the configuration file (the default) or
	// "--disable" for a flag.
	DisableName string
	// NoDefault leaves the embedded pack out.
	NoDefault bool
}

// Matcher classifies log lines. It is safe for concurrent use.
type Matcher struct {
	rules []compiledRule // in rank order: the first that matches wins
	pf    *prefilter     // all literals, conditions included; nil when there are no rules
	// gate holds only prefixes of the literals that make a rule a
	// candidate, so that the common words of regex conditions ("status",
	// "http") do not send every line through the core pass.
	gate *prefilter
	// core holds prefixes of the patterns of pf that are rule literals or
	// condition strings. Its pass finds the candidate rules and the
	// conditions that hold. The
	// start strings that only anchor regexes, such as '"' and "s", hit
	// on most bytes of some lines, so pf runs only when a regex needs
	// them (see collectHits).
	core *prefilter
	// coreIDs maps a pattern of core, a prefix of at most gatePrefixLen
	// bytes, to the pf patterns that start with it. corePats holds those
	// patterns, folded, by pf id.
	coreIDs  [][]int32
	corePats [][]byte
	refs     [][]litRef // per prefilter pattern, the rules that use it
	// scratch holds *scratch values, one per concurrent Match call,
	// cleared before they return to the pool.
	scratch sync.Pool
}

// scratch holds the bit sets of one Match call.
type scratch struct {
	rules    []uint64 // candidate rules: one of their literals occurs
	patterns []uint64 // prefilter patterns that occur
	// hits are the pattern occurrences, up to its capacity. overflow is
	// set when some were not recorded.
	hits     []hit
	overflow bool
	hitsDone bool    // collectHits has filled hits
	pending  []event // see corePass
}

// maxPending bounds the occurrences that the second walk of corePass
// holds back.
const maxPending = 64

// hit is one occurrence of a prefilter pattern, ending before end.
type hit struct {
	id  int32
	end int32
}

// maxHits bounds the occurrences recorded per line.
const maxHits = 64

type litRef struct {
	rule  int32
	exact []byte // for a case-sensitive literal, its bytes; nil otherwise
	word  bool   // the literal counts only as a whole word
}

type compiledRule struct {
	Rule
	// alts are the top-level alternatives of Regex, compiled one by one so
	// that only those whose literals occur in a line run, because Go's
	// regexp slows down with the size of the expression.
	alts []alternative
	// foldDerived is set when Literals were derived from a regex that turns
	// on case folding itself, so they must match in any case.
	foldDerived bool
	// excludes are the top-level alternatives of Exclude.Regex, each run
	// only when one of its literals occurs (any, when it has none).
	excludes  []exclusion
	excludeLi [][]byte
	json      []FieldCondition
}

// exclusion is one top-level alternative of an exclusion regex.
type exclusion struct {
	re       *regexp.Regexp
	literals [][]byte
	// anchored, leading and leadingWB work as in alternative: when set,
	// the regex runs only where a leading string occurs.
	anchored  *regexp.Regexp
	leading   [][]byte
	leadingWB bool
}

// alternative is one top-level alternative of a rule's regex.
type alternative struct {
	re     *regexp.Regexp
	groups []int // per Fields entry of the rule, its capture group index, or -1
	// conjs are the literal conditions derived from re (see
	// regexConditions); conds holds them as prefilter pattern ids. The
	// alternative runs only when, for one conjunction, every group has a
	// pattern in the line. Both are nil when re yields no condition.
	conjs []conjunction
	conds [][][]int32
	// When every match of re starts with one of a few strings (startIDs),
	// anchored is re tied to the start of its input. It runs only where
	// the prefilter saw one of those strings, after a \b check when
	// startWB is set. Go's regexp is slow on unanchored expressions
	// without a literal prefix, so this saves most of the cost.
	anchored  *regexp.Regexp
	startStrs []string
	startIDs  []int32
	startWB   bool
}

// Default compiles the embedded default pack alone.
func Default() (*Matcher, error) {
	return Compile(Options{})
}

// DefaultRules returns the rules of the embedded pack in file order.
func DefaultRules() ([]Rule, error) {
	p, err := parsePack(PackFile{Name: DefaultPackName, Data: defaultPack})
	if err != nil {
		return nil, err
	}
	return p.rules, nil
}

// Compile builds a Matcher from the default pack and opts. Errors are
// *ConfigError values, joined when there are several.
func Compile(opts Options) (*Matcher, error) {
	var packs []*pack
	var errs []error
	if !opts.NoDefault {
		p, err := parsePack(PackFile{Name: DefaultPackName, Data: defaultPack})
		if err != nil {
			return nil, fmt.Errorf("rules: embedded pack: %w", err)
		}
		packs = append(packs, p)
	}
	for _, f := range opts.Packs {
		p, err := parsePack(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		packs = append(packs, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Merge packs: later packs override earlier ones by id.
	var merged []Rule
	index := map[string]int{}
	definedBy := map[string]string{}
	for _, p := range packs {
		seen := map[string]int{}
		for i, r := range p.rules {
			if prev, ok := seen[r.ID]; ok {
				errs = append(errs, &ConfigError{File: p.name, Line: p.lines[i], Path: p.paths[i] + ".id",
					Msg: fmt.Sprintf("duplicate rule id %q, first defined at line %d", r.ID, p.lines[prev])})
				continue
			}
			seen[r.ID] = i
			if j, ok := index[r.ID]; ok {
				if definedBy[r.ID] != DefaultPackName {
					errs = append(errs, &ConfigError{File: p.name, Line: p.lines[i], Path: p.paths[i] + ".id",
						Msg: fmt.Sprintf("duplicate rule id %q, already defined in %s", r.ID, definedBy[r.ID])})
					continue
				}
				merged[j] = r
				definedBy[r.ID] = p.name
				continue
			}
			index[r.ID] = len(merged)
			definedBy[r.ID] = p.name
			merged = append(merged, r)
		}
	}
	disabled := map[string]bool{}
	for _, p := range packs {
		for i, id := range p.disable {
			if _, ok := index[id]; !ok {
				errs = append(errs, &ConfigError{File: p.name, Line: p.disLine[i], Path: fmt.Sprintf("disable[%d]", i),
					Msg: fmt.Sprintf("unknown rule id %q; run `authwatch rules list` for the ids", id)})
			}
			disabled[id] = true
		}
	}
	disableName := opts.DisableName
	if disableName == "" {
		disableName = "rules.disable"
	}
	for i, id := range opts.Disable {
		if _, ok := index[id]; !ok {
			errs = append(errs, &ConfigError{Path: fmt.Sprintf("%s[%d]", disableName, i),
				Msg: fmt.Sprintf("unknown rule id %q; run `authwatch rules list` for the ids", id)})
		}
		disabled[id] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	var active []Rule
	for _, r := range merged {
		if !disabled[r.ID] {
			active = append(active, r)
		}
	}
	slices.SortStableFunc(active, func(a, b Rule) int {
		if d := rank(b) - rank(a); d != 0 {
			return d
		}
		// At equal rank a user's rule wins over the default pack: it was
		// written for the application at hand.
		return boolInt(a.Origin == DefaultPackName) - boolInt(b.Origin == DefaultPackName)
	})

	m := &Matcher{}
	for _, r := range active {
		cr, err := compileRule(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.rules = append(m.rules, cr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	npat := m.buildPrefilter()
	m.scratch.New = func() any {
		return &scratch{
			rules:    make([]uint64, (len(m.rules)+63)/64),
			patterns: make([]uint64, (npat+63)/64),
			hits:     make([]hit, 0, maxHits),
			pending:  make([]event, 0, maxPending),
		}
	}
	return m, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rank orders rules: auth rules before plain errors, then by severity,
// then token expiry before other auth failures. Compile breaks ties.
func rank(r Rule) int {
	v := int(r.Severity) * 4
	switch r.Category {
	case TokenExpired:
		v += 2 + 100
	case AuthFailure:
		v += 1 + 100
	}
	return v
}

// compileRule compiles the expressions of r and fills in its derived
// prefilter literals. parsePack has already checked the expressions.
func compileRule(r Rule) (compiledRule, error) {
	cr := compiledRule{Rule: r, json: r.JSON}
	flags := "(?i)"
	if r.CaseSensitive {
		flags = ""
	}
	if r.Regex != "" {
		alts, err := compileAlternatives(flags, r.Regex)
		if err != nil {
			return cr, &ConfigError{File: r.Origin, Path: "rule " + r.ID + " regex", Msg: err.Error()}
		}
		for _, re := range alts {
			a := alternative{re: re, groups: make([]int, len(r.Fields))}
			for i, f := range r.Fields {
				a.groups[i] = re.SubexpIndex(f)
			}
			part := strings.TrimPrefix(re.String(), flags)
			a.conjs = regexConditions(part)
			if strs, wb, ok := leadingLiterals(part); ok {
				anchored, err := regexp.Compile(flags + "^(?:" + part + ")")
				if err == nil {
					a.anchored, a.startStrs, a.startWB = anchored, strs, wb
				}
			}
			cr.alts = append(cr.alts, a)
		}
	}
	if r.Exclude.Regex != "" {
		parts, err := compileAlternatives(flags, r.Exclude.Regex)
		if err != nil {
			return cr, &ConfigError{File: r.Origin, Path: "rule " + r.ID + " exclude.regex", Msg: err.Error()}
		}
		for _, re := range parts {
			ex := exclusion{re: re}
			part := strings.TrimPrefix(re.String(), flags)
			for _, l := range regexLiterals(part) {
				ex.literals = append(ex.literals, []byte(l))
			}
			if strs, wb, ok := leadingLiterals(part); ok {
				if anchored, err := regexp.Compile(flags + "^(?:" + part + ")"); err == nil {
					ex.anchored, ex.leadingWB = anchored, wb
					for _, s := range strs {
						ex.leading = append(ex.leading, []byte(s))
					}
				}
			}
			cr.excludes = append(cr.excludes, ex)
		}
	}
	for _, l := range r.Exclude.Literals {
		cr.excludeLi = append(cr.excludeLi, []byte(l))
	}
	if len(cr.Literals) == 0 {
		// parsePack rejected rules without derivable literals.
		cr.Literals = derivedLiterals(r)
		// A "(?i)" inside the regex makes its literals case-insensitive.
		cr.foldDerived = strings.Contains(r.Regex, "(?i")
	}
	return cr, nil
}

// compileAlternatives splits expr at its top-level "|" and compiles each
// part with flags in front. A match of expr is a match of one part.
// Splitting the source, not the parsed tree, keeps compilation fast:
// printing a parsed tree with large case-folded classes is slow.
func compileAlternatives(flags, expr string) ([]*regexp.Regexp, error) {
	if _, err := regexp.Compile(flags + expr); err != nil {
		return nil, err
	}
	var out []*regexp.Regexp
	for _, part := range splitTopLevel(expr) {
		re, err := regexp.Compile(flags + part)
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
	return out, nil
}

// isFlagGroup reports whether s starts with a flag group such as "(?i)"
// or "(?s-i)", which sets flags for the rest of the enclosing group.
func isFlagGroup(s string) bool {
	if !strings.HasPrefix(s, "(?") {
		return false
	}
	for i := 2; i < len(s); i++ {
		switch c := s[i]; {
		case c == ')':
			return i > 2
		case c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		default:
			return false
		}
	}
	return false
}

// splitTopLevel splits a regular expression at each "|" outside groups,
// character classes and escapes.
func splitTopLevel(expr string) []string {
	var parts []string
	depth, start := 0, 0
	inClass := false
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; {
		case c == '\\':
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			// A "]" right after "[" or "[^" is a literal member.
			if i+1 < len(expr) && expr[i+1] == '^' {
				i++
			}
			if i+1 < len(expr) && expr[i+1] == ']' {
				i++
			}
		case c == '(' && depth == 0 && isFlagGroup(expr[i:]):
			// "(?i)" at the top level applies to the alternatives after
			// it as well, so the parts cannot be compiled apart.
			return []string{expr}
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			parts = append(parts, expr[start:i])
			start = i + 1
		}
	}
	return append(parts, expr[start:])
}

// derivedLiterals returns prefilter literals for a rule that lists none:
// those of its regex, else the values of its most selective JSON condition.
func derivedLiterals(r Rule) []string {
	if r.Regex != "" {
		if l := regexLiterals(r.Regex); l != nil {
			return l
		}
	}
	var best []string
	bestScore := 0
	for _, c := range r.JSON {
		vals := c.Equals
		if len(vals) == 0 {
			vals = c.Contains
		}
		if len(vals) == 0 {
			continue
		}
		s := litSet{strs: vals}.score()
		if s >= minLiteral && s > bestScore {
			best, bestScore = vals, s
		}
	}
	return best
}

// buildPrefilter interns the literals of all rules as prefilter patterns
// and returns how many there are.
func (m *Matcher) buildPrefilter() int {
	var patterns [][]byte
	ids := map[string]int{}
	intern := func(l string) int {
		folded := make([]byte, len(l))
		for i := range len(l) {
			folded[i] = fold(l[i])
		}
		id, ok := ids[string(folded)]
		if !ok {
			id = len(patterns)
			ids[string(folded)] = id
			patterns = append(patterns, folded)
			m.refs = append(m.refs, nil)
		}
		return id
	}
	for ri := range m.rules {
		r := &m.rules[ri]
		for ai := range r.alts {
			a := &r.alts[ai]
			for _, s := range a.startStrs {
				a.startIDs = append(a.startIDs, int32(intern(s)))
			}
			for _, conj := range a.conjs {
				var groups [][]int32
				for _, set := range conj {
					var g []int32
					for _, s := range set.strs {
						g = append(g, int32(intern(s)))
					}
					groups = append(groups, g)
				}
				a.conds = append(a.conds, groups)
			}
		}
		for _, l := range r.Literals {
			id := intern(l)
			ref := litRef{rule: int32(ri), word: r.WholeWords}
			if r.CaseSensitive && !r.foldDerived {
				ref.exact = []byte(l)
			}
			m.refs[id] = append(m.refs[id], ref)
		}
	}
	if len(patterns) > 0 {
		m.pf = newPrefilter(patterns)
		m.buildCore(patterns)
		m.gate = newPrefilter(gatePatterns(patterns, m.refs))
	}
	return len(patterns)
}

// buildCore builds core from the prefixes of the patterns of pf that are
// rule literals or condition strings. Short patterns keep the automaton
// small and let corePass split most lines into two walks.
func (m *Matcher) buildCore(patterns [][]byte) {
	used := make([]bool, len(patterns))
	for id, refs := range m.refs {
		used[id] = len(refs) > 0
	}
	for ri := range m.rules {
		for _, a := range m.rules[ri].alts {
			for _, conj := range a.conds {
				for _, group := range conj {
					for _, id := range group {
						used[id] = true
					}
				}
			}
		}
	}
	var prefixes [][]byte
	index := map[string]int{}
	m.corePats = make([][]byte, len(patterns))
	for id, u := range used {
		if !u {
			continue
		}
		m.corePats[id] = patterns[id]
		p := patterns[id][:min(len(patterns[id]), gatePrefixLen)]
		k, ok := index[string(p)]
		if !ok {
			k = len(prefixes)
			index[string(p)] = k
			prefixes = append(prefixes, p)
			m.coreIDs = append(m.coreIDs, nil)
		}
		m.coreIDs[k] = append(m.coreIDs[k], int32(id))
	}
	m.core = newPrefilter(prefixes)
}

// gatePrefixLen is the length to which gatePatterns cuts literals.
const gatePrefixLen = 12

// gatePatterns returns the patterns that the gate looks for: the prefixes
// of at most gatePrefixLen bytes of the literals that make a rule a
// candidate (those with refs), without duplicates. A line that contains a
// literal contains its prefix, so the gate lets every candidate through,
// and the full pass decides. Short patterns keep the automaton small
// and let the gate split a line into several walks (see prefilter.any).
func gatePatterns(patterns [][]byte, refs [][]litRef) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	for id, r := range refs {
		if len(r) == 0 {
			continue
		}
		p := patterns[id]
		if len(p) > gatePrefixLen {
			p = p[:gatePrefixLen]
		}
		if !seen[string(p)] {
			seen[string(p)] = true
			out = append(out, p)
		}
	}
	return out
}

// Rules returns the active rules in the order the matcher tries them, with
// derived literals filled in.
func (m *Matcher) Rules() []Rule {
	out := make([]Rule, len(m.rules))
	for i, r := range m.rules {
		out[i] = r.Rule
	}
	return out
}

// Match appends to dst the Match of the first rule, in rank order, that
// matches line, and returns the extended slice. It appends at most one
// Match per line, so counting matches counts lines: auth rules rank before
// error rules, higher severity before lower, token expiry before other
// auth failures, then user packs before the default pack, then file order. A line that no literal hits costs one
// pass of the prefilter and allocates nothing.
//
// The Match holds a copy of the line text, so the caller may reuse
// line.Text.
func (m *Matcher) Match(line *Line, dst []Match) []Match {
	return m.match(line, dst, false)
}

// MatchAll is like Match but appends a Match for every rule that matches,
// in rank order.
func (m *Matcher) MatchAll(line *Line, dst []Match) []Match {
	return m.match(line, dst, true)
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

func (m *Matcher) match(line *Line, dst []Match, all bool) []Match {
	if m.pf == nil {
		return dst
	}
	text := trimCR(line.Text)
	if !m.gate.any(text) {
		return dst
	}
	sc := m.scratch.Get().(*scratch)
	set, pats := sc.rules, sc.patterns
	sc.hits, sc.overflow, sc.hitsDone = sc.hits[:0], false, false
	if !m.corePass(text, sc) {
		m.scratch.Put(sc)
		return dst
	}

	done := false
	for w := range set {
		for set[w] != 0 {
			b := bits.TrailingZeros64(set[w])
			set[w] &^= 1 << b
			if done {
				continue
			}
			r := &m.rules[w*64+b]
			if match, ok := r.match(line, text, sc, m); ok {
				dst = append(dst, match)
				done = !all
			}
		}
	}
	clear(pats)
	m.scratch.Put(sc)
	return dst
}

// corePass records in sc the core patterns that occur in text and the
// candidate rules. It reports whether any core pattern occurs: when none
// does, no rule is a candidate.
//
// A long text is walked in two halves at once, as prefilter.any does. The
// second walk starts maxLen-1 bytes before the middle, so it is in the
// right state by the time its occurrences count, and it holds them in
// sc.pending until the first walk ends. When more are pending than fit,
// the second walk is dropped and the first goes on alone.
func (m *Matcher) corePass(text []byte, sc *scratch) bool {
	pf := m.core
	trans, class, firstOut := pf.trans, &pf.class, pf.firstOut
	n := len(text)
	found := false
	var s int32
	i := 0
	if n >= 2*pf.maxLen && n >= 64 {
		mid := n / 2
		// The second walk reads as many bytes as the first: it stays
		// below n, and it has read mid >= maxLen bytes at the end.
		j := mid - (pf.maxLen - 1)
		var sb int32
		pending := sc.pending[:0]
		second := true
		for i < mid {
			s = trans[s+int32(class[text[i]])]
			sb = trans[sb+int32(class[text[j]])]
			i++
			j++
			if s >= firstOut {
				m.recordCore(text, sc, s, i)
				found = true
			}
			if sb >= firstOut && j > mid && second {
				if len(pending) == cap(pending) {
					second = false
				} else {
					pending = append(pending, event{state: sb, end: int32(j)})
				}
			}
		}
		if second {
			for _, e := range pending {
				m.recordCore(text, sc, e.state, int(e.end))
				found = true
			}
			s, i = sb, j
		}
	}
	for i < n {
		s = trans[s+int32(class[text[i]])]
		i++
		if s >= firstOut {
			m.recordCore(text, sc, s, i)
			found = true
		}
	}
	return found
}

// event is a state with outputs, reached at end.
type event struct {
	state int32
	end   int32
}

// recordCore notes in sc the pf patterns that start with the prefixes of
// core state s, which end before end, and the rules whose literals they
// are.
func (m *Matcher) recordCore(text []byte, sc *scratch, s int32, end int) {
	pf := m.core
	st := s / pf.nclass
	for _, local := range pf.outIDs[pf.outStart[st]:pf.outStart[st+1]] {
		start := end - int(pf.patLen[local])
		for _, id := range m.coreIDs[local] {
			p := m.corePats[id]
			stop := start + len(p)
			if stop > len(text) || !equalFoldFolded(text[end:stop], p[end-start:]) {
				continue
			}
			sc.patterns[id>>6] |= 1 << (id & 63)
			for _, ref := range m.refs[id] {
				if ref.exact != nil && !bytes.Equal(text[start:stop], ref.exact) {
					continue
				}
				if ref.word && !wholeWord(text, start, stop) {
					continue
				}
				sc.rules[ref.rule>>6] |= 1 << (ref.rule & 63)
			}
		}
	}
}

// equalFoldFolded reports whether text equals the folded pattern p,
// ignoring ASCII case. Both have the same length.
func equalFoldFolded(text, p []byte) bool {
	for i, b := range p {
		if fold(text[i]) != b {
			return false
		}
	}
	return true
}

// collectHits records in sc.hits the first maxHits occurrences of pf
// patterns in text, by end and then longest first, and sets sc.overflow
// when there are more. It does the work once per line.
func (m *Matcher) collectHits(text []byte, sc *scratch) {
	if sc.hitsDone {
		return
	}
	sc.hitsDone = true
	pf := m.pf
	trans, class, firstOut := pf.trans, &pf.class, pf.firstOut
	var s int32
	for end := 0; end < len(text); {
		s = trans[s+int32(class[text[end]])]
		end++
		if s < firstOut {
			continue
		}
		st := s / pf.nclass
		for _, id := range pf.outIDs[pf.outStart[st]:pf.outStart[st+1]] {
			if len(sc.hits) == cap(sc.hits) {
				sc.overflow = true
				return
			}
			sc.hits = append(sc.hits, hit{id: id, end: int32(end)})
		}
	}
}

// condsHold reports whether the patterns that occur in a line satisfy one
// of the conjunctions of a.
func (a *alternative) condsHold(pats []uint64) bool {
	if a.conds == nil {
		return true
	}
	for _, conj := range a.conds {
		ok := true
		for _, group := range conj {
			hit := false
			for _, id := range group {
				if pats[id>>6]&(1<<(id&63)) != 0 {
					hit = true
					break
				}
			}
			if !hit {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// match evaluates the conditions of r on text, whose literals hit; sc
// holds the prefilter patterns that occur in text and where.
func (r *compiledRule) match(line *Line, text []byte, sc *scratch, m *Matcher) (Match, bool) {
	var loc []int
	var groups []int
	if len(r.alts) > 0 {
		matched := false
		for i := range r.alts {
			a := &r.alts[i]
			if !a.condsHold(sc.patterns) {
				continue
			}
			matched, loc = a.find(text, sc, m)
			if matched {
				groups = a.groups
				break
			}
		}
		if !matched {
			return Match{}, false
		}
	}
	for _, c := range r.json {
		if !r.fieldHolds(text, c) {
			return Match{}, false
		}
	}
	for _, l := range r.excludeLi {
		if r.index(text, l) >= 0 {
			return Match{}, false
		}
	}
	for i := range r.excludes {
		if r.excludes[i].holds(text) {
			return Match{}, false
		}
	}

	out := Match{RuleID: r.ID, Category: r.Category, Severity: r.Severity, Line: *line}
	out.Line.Text = bytes.Clone(text)
	for i, name := range r.Fields {
		var v []byte
		found := false
		g := -1
		if groups != nil {
			g = groups[i]
		}
		if g >= 0 && loc != nil && loc[2*g] >= 0 {
			v, found = text[loc[2*g]:loc[2*g+1]], true
		} else if g < 0 {
			v, found = jsonField(text, name)
		}
		if !found {
			continue
		}
		if out.Fields == nil {
			out.Fields = make(map[string]string, len(r.Fields))
		}
		out.Fields[name] = string(Mask(v))
	}
	return out, true
}

// find reports whether a matches text and, when the rule extracts
// fields, returns the submatch offsets.
func (a *alternative) find(text []byte, sc *scratch, m *Matcher) (bool, []int) {
	if a.anchored != nil {
		m.collectHits(text, sc)
	}
	pf := m.pf
	if a.anchored != nil && !sc.overflow {
		for _, h := range sc.hits {
			if !slices.Contains(a.startIDs, h.id) {
				continue
			}
			start := int(h.end - pf.patLen[h.id])
			if a.startWB && !wordBoundaryAt(text, start) {
				continue
			}
			if !a.anchored.Match(text[start:]) {
				continue
			}
			if !a.needsGroups() {
				return true, nil
			}
			loc := a.anchored.FindSubmatchIndex(text[start:])
			for i := range loc {
				if loc[i] >= 0 {
					loc[i] += start
				}
			}
			return true, loc
		}
		return false, nil
	}
	// Match first: on the many lines that do not match, it is cheaper than
	// tracking submatches.
	if !a.re.Match(text) {
		return false, nil
	}
	if a.needsGroups() {
		return true, a.re.FindSubmatchIndex(text)
	}
	return true, nil
}

// wordBoundaryAt reports whether \b holds at offset i of text, as RE2
// defines it for ASCII word characters.
func wordBoundaryAt(text []byte, i int) bool {
	before := i > 0 && isWordByte(text[i-1])
	after := i < len(text) && isWordByte(text[i])
	return before != after
}

func (a *alternative) needsGroups() bool {
	for _, g := range a.groups {
		if g >= 0 {
			return true
		}
	}
	return false
}

func (r *compiledRule) index(text, lit []byte) int {
	if r.CaseSensitive {
		return bytes.Index(text, lit)
	}
	return indexFold(text, lit)
}

func (r *compiledRule) fieldHolds(text []byte, c FieldCondition) bool {
	v, ok := jsonField(text, c.Field)
	if !ok {
		return false
	}
	if len(c.Equals) > 0 {
		for _, want := range c.Equals {
			if r.CaseSensitive && string(v) == want || !r.CaseSensitive && equalFold(v, want) {
				return true
			}
		}
		return false
	}
	if len(c.Contains) > 0 {
		for _, want := range c.Contains {
			if r.index(v, []byte(want)) >= 0 {
				return true
			}
		}
		return false
	}
	return true
}

func equalFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if fold(a[i]) != fold(b[i]) {
			return false
		}
	}
	return true
}

// indexFold is bytes.Index ignoring ASCII case, without allocating.
func indexFold(s, sub []byte) int {
	n := len(sub)
	if n == 0 {
		return 0
	}
	first := fold(sub[0])
	for i := 0; i+n <= len(s); i++ {
		if fold(s[i]) != first {
			continue
		}
		j := 1
		for j < n && fold(s[i+j]) == fold(sub[j]) {
			j++
		}
		if j == n {
			return i
		}
	}
	return -1
}

func isWordByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_'
}

// wholeWord reports whether text[start:end] is not part of a longer word.
func wholeWord(text []byte, start, end int) bool {
	return (start == 0 || !isWordByte(text[start-1])) && (end == len(text) || !isWordByte(text[end]))
}

// holds reports whether the exclusion matches text, running its regex only
// when one of its literals occurs.
func (x *exclusion) holds(text []byte) bool {
	if x.anchored != nil {
		for _, l := range x.leading {
			for off := 0; ; {
				i := indexFold(text[off:], l)
				if i < 0 {
					break
				}
				start := off + i
				off = start + 1
				if x.leadingWB && !wordBoundaryAt(text, start) {
					continue
				}
				if x.anchored.Match(text[start:]) {
					return true
				}
			}
		}
		return false
	}
	if x.literals != nil {
		found := false
		for _, l := range x.literals {
			if indexFold(text, l) >= 0 {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return x.re.Match(text)
}
