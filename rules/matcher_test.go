package rules

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func compileTest(t testing.TB, pack string) *Matcher {
	t.Helper()
	m, err := Compile(Options{NoDefault: true, Packs: []PackFile{{"test.yaml", []byte(pack)}}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func matchIDs(m *Matcher, line string, all bool) []string {
	l := &Line{Text: []byte(line)}
	var got []Match
	if all {
		got = m.MatchAll(l, nil)
	} else {
		got = m.Match(l, nil)
	}
	ids := []string{}
	for _, g := range got {
		ids = append(ids, g.RuleID)
	}
	return ids
}

const testPack = `
rules:
  - id: err
    category: error
    literals: [error]
  - id: auth
    category: auth_failure
    literals: [denied]
  - id: expired
    category: token_expired
    literals: [expired]
    exclude:
      literals: [not expired]
      regex: 'cleared \d+ expired'
  - id: warn
    category: token_expired
    severity: warning
    literals: [expires soon]
  - id: exact-case
    category: auth_failure
    case_sensitive: true
    literals: [WRONGPASS]
  - id: status
    category: auth_failure
    regex: 'status=(?P<status>40[13]) user=(?P<user>\S+) token=(?P<tok>\S+)'
    fields: [status, user, tok]
  - id: json-status
    category: auth_failure
    json:
      - field: http.response.status_code
        equals: [401, 403]
      - field: level
        equals: [error, warn]
    fields: [service, http.response.status_code]
  - id: json-contains
    category: token_expired
    json:
      - field: msg
        contains: [jwt expired, token expired]
`

func TestMatchRanking(t *testing.T) {
	m := compileTest(t, testPack)
	tests := []struct {
		line    string
		want    []string
		wantAll []string
	}{
		{"all fine", []string{}, []string{}},
		{"error: access denied", []string{"auth"}, []string{"auth", "err"}},
		{"error: access denied, token expired", []string{"expired"}, []string{"expired", "auth", "err"}},
		{"ERROR token expires soon", []string{"warn"}, []string{"warn", "err"}},
		{"denied: token expires soon", []string{"auth"}, []string{"auth", "warn"}},
		{"token is not expired", []string{}, []string{}},
		{"cleared 12 expired sessions", []string{}, []string{}},
		{"WRONGPASS invalid password", []string{"exact-case"}, []string{"exact-case"}},
		{"wrongpass invalid password", []string{}, []string{}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, matchIDs(m, tc.line, false)); diff != "" {
			t.Errorf("Match(%q) (-want +got):\n%s", tc.line, diff)
		}
		if diff := cmp.Diff(tc.wantAll, matchIDs(m, tc.line, true)); diff != "" {
			t.Errorf("MatchAll(%q) (-want +got):\n%s", tc.line, diff)
		}
	}
}

func TestMatchFieldsMasked(t *testing.T) {
	m := compileTest(t, testPack)
	got := m.Match(&Line{Text: []byte("status=401 user=town token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0b3duIn0.c2lnbmF0dXJl")}, nil)
	if len(got) != 1 {
		t.Fatalf("got %d matches, want 1", len(got))
	}
	want := map[string]string{"status": "401", "user": "town", "tok": Masked}
	if diff := cmp.Diff(want, got[0].Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}

func TestMatchJSONConditions(t *testing.T) {
	// Only the JSON rules, so that the literal rules of testPack do not
	// win on these lines.
	_, jsonRules, _ := strings.Cut(testPack, "  - id: json-status")
	m := compileTest(t, "rules:\n  - id: json-status"+jsonRules)
	tests := []struct {
		line       string
		want       string
		wantFields map[string]string
	}{
		{`{"level":"error","service":"towns","http":{"request":{"method":"GET"},"response":{"status_code":401}}}`, "json-status",
			map[string]string{"service": "towns", "http.response.status_code": "401"}},
		{`{"level":"WARN","http":{"response":{"status_code":"403"}}}`, "json-status",
			map[string]string{"http.response.status_code": "403"}},
		{`{"level":"info","http":{"response":{"status_code":401}}}`, "", nil},
		{`{"level":"error","http":{"response":{"status_code":200}},"bytes":401}`, "", nil},
		{`{"level":"error","status_code":401}`, "", nil},
		{`{"msg":"call failed: JWT Expired at noon"}`, "json-contains", nil},
		{`{"message":"jwt expired"}`, "", nil},
		{`not json but jwt expired`, "", nil},
		{`{"msg":"jwt expired"`, "json-contains", nil}, // cut off after a complete value
	}
	for _, tc := range tests {
		got := m.Match(&Line{Text: []byte(tc.line)}, nil)
		id := ""
		var fields map[string]string
		if len(got) > 0 {
			id, fields = got[0].RuleID, got[0].Fields
		}
		if id != tc.want {
			t.Errorf("%s: matched %q, want %q", tc.line, id, tc.want)
		}
		if diff := cmp.Diff(tc.wantFields, fields); diff != "" {
			t.Errorf("%s: fields (-want +got):\n%s", tc.line, diff)
		}
	}
}

func TestMatchStripsCRAndCopiesText(t *testing.T) {
	m := compileTest(t, testPack)
	buf := []byte("access denied\r")
	got := m.Match(&Line{Text: buf, Source: Source{Pod: "web-0"}}, nil)
	if len(got) != 1 {
		t.Fatalf("got %d matches, want 1", len(got))
	}
	copy(buf, "XXXXXX")
	if string(got[0].Line.Text) != "access denied" {
		t.Errorf("match text %q, want %q without the \\r and unaffected by reuse of the buffer", got[0].Line.Text, "access denied")
	}
	if got[0].Line.Source.Pod != "web-0" {
		t.Errorf("match lost the source: %+v", got[0].Line.Source)
	}
}

func TestMatchAppendsToDst(t *testing.T) {
	m := compileTest(t, testPack)
	dst := []Match{{RuleID: "earlier"}}
	dst = m.Match(&Line{Text: []byte("denied")}, dst)
	if len(dst) != 2 || dst[0].RuleID != "earlier" || dst[1].RuleID != "auth" {
		t.Errorf("got %v, want the earlier match followed by auth", dst)
	}
}

func TestMatchInvalidUTF8(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	lines := [][]byte{
		[]byte("\xff\xfe jwt expired \x00"),
		[]byte("\xc3\x28 401 Unauthorized \xe2\x82"),
		[]byte("{\"level\":\"error\",\"msg\":\"\xff\",\"status\":401}"),
		bytes.Repeat([]byte{0xff}, 1000),
	}
	wants := []string{"token-expired", "http-client-401-403", "http-status-field", ""}
	for i, l := range lines {
		got := m.Match(&Line{Text: l}, nil)
		id := ""
		if len(got) > 0 {
			id = got[0].RuleID
		}
		if id != wants[i] {
			t.Errorf("line %q matched %q, want %q", l, id, wants[i])
		}
	}
}

// TestMatchNoMatchAllocatesNothing checks the promise that a line without
// a match allocates nothing, including lines whose literals hit but whose
// regex then fails. BenchmarkMatchNoMatch reports the same with -benchmem.
func TestMatchNoMatchAllocatesNothing(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	// Lines without any literal never touch a pool.
	lines := []string{
		`10.0.3.7 - - [02/May/2026:11:00:11 +0000] "GET /healthz HTTP/1.1" 200 5123 "-" "kube-probe/1.31"`,
		`{"level":"info","ts":"2026-05-02T11:12:02.000Z","msg":"request served","status":200,"bytes":5123}`,
	}
	// Lines whose literals hit use pooled scratch space and pooled regexp
	// machines, which allocate under the race detector only.
	if !raceEnabled {
		lines = append(lines,
			`10.0.3.7 - - [02/May/2026:11:00:11 +0000] "GET /healthz HTTP/1.1" 200 401 "-" "kube-probe/1.31"`,
			`{"level":"info","ts":"2026-05-02T11:12:02.000Z","msg":"request served","status":200,"bytes":401}`,
			`2026-05-02 11:00:01,004 INFO town_builder.auth: Authorized successfully as builder@iribala`,
			`method=GET path=/healthz status=200 bytes=401 duration_ms=3`,
		)
	}
	for _, text := range lines {
		line := &Line{Text: []byte(text)}
		dst := make([]Match, 0, 4)
		m.Match(line, dst) // warm the scratch pool
		allocs := testing.AllocsPerRun(100, func() {
			if got := m.Match(line, dst[:0]); len(got) != 0 {
				t.Fatalf("%s matched %s", text, got[0].RuleID)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per Match, want 0", text, allocs)
		}
	}
}

func TestPrefilterAgainstNaiveSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("abAB01 .")
	word := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return b
	}
	for round := range 200 {
		var pats [][]byte
		for range 1 + rng.IntN(8) {
			pats = append(pats, word(1+rng.IntN(4)))
		}
		pf := newPrefilter(pats)
		text := word(rng.IntN(40))
		type hit struct{ id, end int }
		var want []hit
		lower := bytes.ToLower(text)
		for id, p := range pats {
			lp := bytes.ToLower(p)
			for end := len(lp); end <= len(lower); end++ {
				if bytes.Equal(lower[end-len(lp):end], lp) {
					want = append(want, hit{id, end})
				}
			}
		}
		var got []hit
		if end, s := pf.first(text); end >= 0 {
			pf.each(text, end, s, func(id int32, end int) { got = append(got, hit{int(id), end}) })
		}
		cmpHit := func(a, b hit) int {
			if a.end != b.end {
				return a.end - b.end
			}
			return a.id - b.id
		}
		slices.SortFunc(want, cmpHit)
		slices.SortFunc(got, cmpHit)
		if !slices.Equal(want, got) {
			t.Fatalf("round %d: patterns %q in %q: got %v, want %v", round, pats, text, got, want)
		}
	}
}

func TestRegexLiterals(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`jwt expired`, []string{"jwt expired"}},
		{`\bjwt (?:expired|malformed)\b`, []string{"jwt expired", "jwt malformed"}},
		{`token\s+expired`, []string{"expired"}},
		{`(?:a|b)c(?:d|e)`, []string{"acd", "ace", "bcd", "bce"}},
		{`(?P<s>40[13]) Unauthorized`, []string{"401 Unauthorized", "403 Unauthorized"}},
		{`could ?not log ?in`, []string{"not log"}},
		{`\d+ms`, nil},
		{`ab|cdef`, nil},
		{`(?:token)?expired`, []string{"expired"}},
		{`x*`, nil},
	}
	for _, tc := range tests {
		got := regexLiterals(tc.expr)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("regexLiterals(%q) (-want +got):\n%s", tc.expr, diff)
		}
	}
}

func TestJSONField(t *testing.T) {
	doc := []byte(` { "a" : "x\"y", "n": 401, "o": {"p": [1, {"q": "}"}], "r": {"s": true}}, "e": "" } `)
	tests := []struct {
		path string
		want string
		ok   bool
	}{
		{"a", `x\"y`, true},
		{"n", "401", true},
		{"o.r.s", "true", true},
		{"o.p", `[1, {"q": "}"}]`, true},
		{"e", "", true},
		{"o.q", "", false},
		{"missing", "", false},
		{"a.b", "", false},
	}
	for _, tc := range tests {
		got, ok := jsonField(doc, tc.path)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("jsonField(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []string{``, `[1]`, `{"a"`, `{"a":`, `{"a":"x`, `{"a" 1}`, `{"b":1 "a":2}`} {
		if v, ok := jsonField([]byte(bad), "a"); ok {
			t.Errorf("jsonField(%q) = %q, want not found", bad, v)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Authorization: Bearer abc.def-123_XYZ", "Authorization: Bearer ***"},
		{`"HTTP_AUTHORIZATION": "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"`, `"HTTP_AUTHORIZATION": "Token ***"`},
		{"authorization=Basic dG93bjpodW50ZXIy", "authorization=Basic ***"},
		{"sent Bearer 9f8e7d6c5b4a39281706 upstream", "sent Bearer *** upstream"},
		{"Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b rejected", "Token *** rejected"},
		{"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x end", "jwt *** end"},
		{"?access_token=abc123&page=2", "?access_token=***&page=2"},
		{`{"refresh_token":"r-123","token_type":"Bearer"}`, `{"refresh_token":"***","token_type":"Bearer"}`},
		{"password=hunter2 user=town", "password=*** user=town"},
		{"'password': 'hunter2'", "'password': '***'"},
		{"postgres://town:s3cret@db:5432/town", "postgres://town:***@db:5432/town"},
		{"key AKIAIOSFODNN7EXAMPLE used", "key *** used"},
		{"xoxb-1234567890-abcdefghijk", "***"},
		{"X-Api-Key: 0123456789abcdef", "X-Api-Key: ***"},
		// Prose stays as it is.
		{"Token is expired", "Token is expired"},
		{"invalid token: token is expired", "invalid token: token is expired"},
		{"Bearer authentication failed", "Bearer authentication failed"},
		{`WWW-Authenticate: Bearer error="invalid_token"`, `WWW-Authenticate: Bearer error="invalid_token"`},
		{"password authentication failed for user town", "password authentication failed for user town"},
		{`"token_type":"access","prompt_tokens":401`, `"token_type":"access","prompt_tokens":401`},
		{"target town-builder-api-token: token in Secret town-builder/town-builder-secrets",
			"target town-builder-api-token: token in Secret town-builder/town-builder-secrets"},
		{"the secret: town-builder-secrets was patched", "the secret: town-builder-secrets was patched"},
		{"Authorization: denied for user town", "Authorization: denied for user town"},
		{"Token authentication-failed-for-everyone", "Token authentication-failed-for-everyone"},
		{"token=expired api_key=none password=*** secret=NULL", "token=expired api_key=none password=*** secret=NULL"},
		// Credentials in the same shapes are still masked.
		{"password: hunter2 rejected", "password: *** rejected"},
		{"api-token: 9944b09199c62bcf9418", "api-token: ***"},
		{"client_secret: Zm9vYmFyYmF6", "client_secret: ***"},
		{"Authorization: dG93bjpodW50ZXIy", "Authorization: ***"},
		{"Bearer tokenfromthevaultissuer", "Bearer ***"},
		{"password=correct-horse-battery-staple", "password=***"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := string(Mask([]byte(tc.in))); got != tc.want {
			t.Errorf("Mask(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestMaskDoesNotAlias(t *testing.T) {
	in := []byte("nothing secret here")
	out := Mask(in)
	out[0] = 'N'
	if in[0] != 'n' {
		t.Error("Mask returned memory shared with its input")
	}
}

func TestCategoryRoundTrip(t *testing.T) {
	for _, c := range []Category{AuthFailure, TokenExpired, Error} {
		got, ok := ParseCategory(c.String())
		if !ok || got != c {
			t.Errorf("ParseCategory(%q) = %v, %v", c.String(), got, ok)
		}
	}
	if !TokenExpired.Is(AuthFailure) || AuthFailure.Is(TokenExpired) || Error.Is(AuthFailure) {
		t.Error("Category.Is does not treat token_expired as a kind of auth_failure only")
	}
	if strings.Contains(CategoryNone.String(), "auth") {
		t.Error("CategoryNone reads as an auth category")
	}
}

func TestPrefilterAnyAgainstFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pf := newPrefilter([][]byte{[]byte("expired"), []byte("401"), []byte("auth")})
	alphabet := []byte("expiredauth401 .x")
	for range 2000 {
		text := make([]byte, rng.IntN(300))
		for i := range text {
			text[i] = alphabet[rng.IntN(len(alphabet))]
		}
		end, _ := pf.first(text)
		if got := pf.any(text); got != (end >= 0) {
			t.Fatalf("any(%q) = %v, first found a hit ending at %d", text, got, end)
		}
	}
}

// each calls fn for every pattern occurrence that ends at or after offset
// end, starting from the state that first returned.
func (p *prefilter) each(text []byte, end int, s int32, fn func(id int32, end int)) {
	for {
		if s >= p.firstOut {
			st := s / p.nclass
			for _, id := range p.outIDs[p.outStart[st]:p.outStart[st+1]] {
				fn(id, end)
			}
		}
		if end >= len(text) {
			return
		}
		s = p.trans[s+int32(p.class[text[end]])]
		end++
	}
}

func TestSplitTopLevel(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`a|b`, []string{"a", "b"}},
		{`(a|b)|c`, []string{"(a|b)", "c"}},
		{`[|]|\||x`, []string{"[|]", "\\|", "x"}},
		{`[]|]a|b`, []string{"[]|]a", "b"}},
		{`[^]|]a|b`, []string{"[^]|]a", "b"}},
		{`(?i)a|b`, []string{"(?i)a|b"}},
		{`x(?-s)a|b`, []string{"x(?-s)a|b"}},
		{`(?i:a)|b`, []string{"(?i:a)", "b"}},
		{`(?P<n>a|b)`, []string{"(?P<n>a|b)"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, splitTopLevel(tc.expr)); diff != "" {
			t.Errorf("splitTopLevel(%q) (-want +got):\n%s", tc.expr, diff)
		}
	}
}

func TestMatchFlagGroupAcrossAlternatives(t *testing.T) {
	m := compileTest(t, `
rules:
  - id: flags
    category: error
    case_sensitive: true
    regex: 'Boom|(?i)crash|BANG'
`)
	for line, want := range map[string]bool{"Boom": true, "boom": false, "CRASH": true, "bang": true} {
		got := len(m.Match(&Line{Text: []byte(line)}, nil)) == 1
		if got != want {
			t.Errorf("%q matched %v, want %v", line, got, want)
		}
	}
}

// TestGateAcceptsEveryLiteral checks that the gate, which looks for
// prefixes of the rule literals, lets through a line with any literal of
// the default pack in any case.
func TestGateAcceptsEveryLiteral(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Rules() {
		for _, l := range r.Literals {
			for _, text := range []string{l, "x " + strings.ToUpper(l) + " y"} {
				if !m.gate.any([]byte(text)) {
					t.Errorf("rule %s: gate rejects %q", r.ID, text)
				}
			}
		}
	}
}

// TestCorePassAndHitsMatchOneWalk checks corePass and collectHits, which
// split the work of one walk of pf, against that walk: the same
// candidate rules and condition strings, and the same first occurrences
// in the same order.
func TestCorePassAndHitsMatchOneWalk(t *testing.T) {
	m, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	inCore := make([]bool, len(m.refs))
	for id, p := range m.corePats {
		inCore[id] = p != nil
	}
	// The pack's own strings and a few frequent bytes, so that lines have
	// many occurrences, more than maxHits in some.
	strs := []string{" ", "x", `"`, "s", "=", "\xff", "Token", "401"}
	for _, r := range m.rules {
		strs = append(strs, r.Literals...)
		for _, a := range r.alts {
			strs = append(strs, a.startStrs...)
			for _, c := range a.conjs {
				for _, set := range c {
					strs = append(strs, set.strs...)
				}
			}
		}
	}
	var texts [][]byte
	// The longest core pattern at every offset of lines a little longer
	// than twice its length, which corePass walks in two halves.
	longest := string(slices.MaxFunc(m.corePats, func(a, b []byte) int { return len(a) - len(b) }))
	for n := 2 * len(longest); n < 2*len(longest)+4; n++ {
		for at := 0; at+len(longest) <= n; at++ {
			texts = append(texts, []byte(strings.Repeat("x", at)+longest+strings.Repeat("x", n-at-len(longest))))
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		var b strings.Builder
		for range rng.IntN(120) {
			b.WriteString(strs[rng.IntN(len(strs))])
		}
		texts = append(texts, []byte(b.String()))
	}
	overflowed := 0
	for round, text := range texts {

		want := &scratch{
			rules:    make([]uint64, (len(m.rules)+63)/64),
			patterns: make([]uint64, (len(m.refs)+63)/64),
		}
		var wantHits []hit
		if end, s := m.pf.first(text); end >= 0 {
			m.pf.each(text, end, s, func(id int32, end int) {
				if inCore[id] {
					want.patterns[id>>6] |= 1 << (id & 63)
					for _, ref := range m.refs[id] {
						if ref.exact != nil && !bytes.Equal(text[end-len(ref.exact):end], ref.exact) {
							continue
						}
						if ref.word && !wholeWord(text, end-int(m.pf.patLen[id]), end) {
							continue
						}
						want.rules[ref.rule>>6] |= 1 << (ref.rule & 63)
					}
				}
				wantHits = append(wantHits, hit{id: id, end: int32(end)})
			})
		}
		wantOverflow := len(wantHits) > maxHits
		if wantOverflow {
			wantHits = wantHits[:maxHits]
			overflowed++
		}

		got := m.scratch.Get().(*scratch)
		got.hits, got.overflow, got.hitsDone = got.hits[:0], false, false
		m.corePass(text, got)
		m.collectHits(text, got)
		if !slices.Equal(got.rules, want.rules) || !slices.Equal(got.patterns, want.patterns) {
			t.Fatalf("round %d, text %q: core pass found rules %x patterns %x, one walk %x %x",
				round, text, got.rules, got.patterns, want.rules, want.patterns)
		}
		if got.overflow != wantOverflow || !slices.Equal(got.hits, wantHits) {
			t.Fatalf("round %d, text %q: collectHits overflow=%v hits=%v, one walk overflow=%v hits=%v",
				round, text, got.overflow, got.hits, wantOverflow, wantHits)
		}
		clear(got.rules)
		clear(got.patterns)
		m.scratch.Put(got)
	}
	if overflowed == 0 {
		t.Error("no line had more than maxHits occurrences; the overflow case went untested")
	}
}
