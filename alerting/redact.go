package alerting

import (
	"regexp"
	"strings"
	"sync"

	"github.com/authwatch/authwatch/internal/secret"
)

// tokenPatterns catch credentials that a log line may carry even after the
// rules mask ran: bearer and Token authorization values, JWTs, Slack
// tokens and key=value pairs whose key names a secret.
var tokenPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=-]{16,}`),
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`),
	regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{6,}`),
	regexp.MustCompile(`(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s"'<>]+`),
	regexp.MustCompile(`(?i)\b(authorization"?\s*[:=]\s*"?(?:bearer|basic|token|digest)?\s*)()[^\s"',;&]{4,}`),
	regexp.MustCompile(`(?i)\b((?:access_|refresh_|api_|id_)?token|password|passwd|secret|api_?key)("?\s*[:=]\s*"?)[^\s"',;&]{4,}`),
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
	for _, re := range tokenPatterns {
		s = re.ReplaceAllString(s, "${1}${2}"+mask)
	}
	return s
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
