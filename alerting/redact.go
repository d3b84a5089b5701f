package alerting

import (
	"regexp"
	"strings"
	"sync"

	"github.com/authwatch/authwatch/internal/credential"
	"github.com/authwatch/authwatch/internal/secret"
)

// secretKeyNames are key names whose values are credentials.
const secretKeyNames = `(?:(?:access|refresh|api|id|auth|session)[_-]?token|token|password|passwd|secret|api_?key)`

// tokenPattern finds one kind of credential. Submatch secret is replaced
// by the mask, unless accept is set and rejects the match; the text
// around it stays.
type tokenPattern struct {
	re     *regexp.Regexp
	secret int
	accept func(s string, loc []int) bool
}

// tokenPatterns catch credentials that a log line may carry even after the
// rules mask ran: bearer and Token authorization values, JWTs, Slack
// tokens and webhook URLs, and values of keys that name a secret. Where a
// value may be prose, as after "Token", a schemeless Authorization header
// or an unquoted "key:", it is masked only when it looks like a
// credential, so that "api-token: token in Secret town/api" stays
// readable. After "key=" and in quoted "key": "value" pairs every value
// but a placeholder such as "none" is masked.
var tokenPatterns = []tokenPattern{
	{re: regexp.MustCompile(`(?i)\b(?:bearer|token|basic)\s+([A-Za-z0-9._~+/=-]{16,})`), secret: 1, accept: credentialAt(1)},
	{re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)},
	{re: regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{6,}`)},
	{re: regexp.MustCompile(`hooks\.slack\.com/(?:services|workflows|triggers)/([^\s"'<>]+)`), secret: 1},
	// Submatch 1 is the scheme word: with one the value is always a
	// credential, without one "Authorization: denied" is prose.
	{re: regexp.MustCompile(`(?i)\bauthorization"?\s*[:=]\s*"?((?:bearer|basic|token|digest)\s+)?([^\s"',;&]{4,})`), secret: 2,
		accept: func(s string, loc []int) bool { return loc[2] >= 0 || credential.LooksLike(s[loc[4]:loc[5]]) }},
	{re: regexp.MustCompile(`(?i)(?:\b|_)` + secretKeyNames + `\s*=\s*"?([^\s"',;&]{4,})`), secret: 1, accept: notPlaceholderAt(1)},
	{re: regexp.MustCompile(`(?i)"(?:[\w-]*[_-])?` + secretKeyNames + `"\s*:\s*"?([^\s"',;&]{4,})`), secret: 1, accept: notPlaceholderAt(1)},
	{re: regexp.MustCompile(`(?i)(?:\b|_)` + secretKeyNames + `:\s*([^\s"',;&]{4,})`), secret: 1, accept: credentialAt(1)},
}

// credentialAt accepts a match whose submatch g looks like a credential.
func credentialAt(g int) func(s string, loc []int) bool {
	return func(s string, loc []int) bool { return credential.LooksLike(s[loc[2*g]:loc[2*g+1]]) }
}

// notPlaceholderAt accepts a match whose submatch g is not a placeholder.
func notPlaceholderAt(g int) func(s string, loc []int) bool {
	return func(s string, loc []int) bool { return !credential.IsPlaceholder(s[loc[2*g]:loc[2*g+1]]) }
}

const mask = "****"

// Redactor removes secrets from text that leaves authwatch: the
// configured credentials (Slack token, webhook URLs and keys) wherever
// they appear, and token-shaped strings. It is safe for concurrent use.
type Redactor struct {
	mu      sync.RWMutex // guards secrets
	secrets []string
}

// Add registers a credential to be masked wherever it appears.
func (r *Redactor) Add(v secret.Value) {
	if v.IsZero() || len(v.Reveal()) < 4 {
		return
	}
	r.mu.Lock()
	r.secrets = append(r.secrets, v.Reveal())
	r.mu.Unlock()
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	r.mu.RLock()
	for _, v := range r.secrets {
		s = strings.ReplaceAll(s, v, mask)
	}
	r.mu.RUnlock()
	for _, p := range tokenPatterns {
		s = p.replace(s)
	}
	return s
}

// replace masks submatch p.secret of every match in s that p.accept
// accepts.
func (p tokenPattern) replace(s string) string {
	locs := p.re.FindAllStringSubmatchIndex(s, -1)
	if locs == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, loc := range locs {
		start, end := loc[2*p.secret], loc[2*p.secret+1]
		if start < 0 || (p.accept != nil && !p.accept(s, loc)) {
			continue
		}
		b.WriteString(s[last:start])
		b.WriteString(mask)
		last = end
	}
	b.WriteString(s[last:])
	return b.String()
}

// Error returns err with its message redacted; errors.Is and errors.As
// still see the original through Unwrap.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := r.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
