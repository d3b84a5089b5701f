// Package rules decides whether a log line reports an authentication
// failure, a token expiry or another error. It compiles rule packs (an
// embedded default pack plus user rules) into a matcher that runs a
// case-folded literal prefilter ahead of RE2. The package does no I/O and
// starts no goroutines.
package rules

import "time"

// Source identifies the container instance that wrote a line.
// Workload is "<kind>/<name>", for example "Deployment/town-builder";
// it is empty for a line read from a file.
type Source struct {
	Namespace   string
	Pod         string
	PodUID      string
	Container   string
	ContainerID string
	Node        string
	Workload    string
}

// Line is one log line on its way to the matcher.
// Text holds raw bytes with any trailing "\r" stripped and is capped in
// length by the reader; it may hold invalid UTF-8. The matcher does not
// keep Text past the call, so readers may reuse the buffer.
type Line struct {
	Text      []byte
	Time      time.Time
	Source    Source
	Truncated bool
}

// Category is the kind of event that a rule recognises.
type Category uint8

// Categories. TokenExpired is a kind of AuthFailure: a selector for
// AuthFailure also selects TokenExpired (see Category.Is).
const (
	CategoryNone Category = iota
	AuthFailure
	TokenExpired
	Error
)

var categoryNames = [...]string{"none", "auth_failure", "token_expired", "error"}

// String returns the name used in configuration, logs and metric labels.
func (c Category) String() string {
	if int(c) < len(categoryNames) {
		return categoryNames[c]
	}
	return "unknown"
}

// Is reports whether c falls under want: every category is itself, and
// TokenExpired is also an AuthFailure.
func (c Category) Is(want Category) bool {
	return c == want || (c == TokenExpired && want == AuthFailure)
}

// ParseCategory returns the category named s, or false when s names none.
func ParseCategory(s string) (Category, bool) {
	for i, name := range categoryNames {
		if i > 0 && name == s {
			return Category(i), true
		}
	}
	return CategoryNone, false
}

// Severity orders matches. Warning marks a line that announces an expiry
// without a failure (a lease about to expire); by default such matches
// never trigger a rotation.
type Severity uint8

// Severities in increasing order.
const (
	SeverityNone Severity = iota
	Info
	Warning
	SeverityError
	Critical
)

var severityNames = [...]string{"none", "info", "warning", "error", "critical"}

// String returns the name used in configuration, logs and metric labels.
func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "unknown"
}

// ParseSeverity returns the severity named s, or false when s names none.
func ParseSeverity(s string) (Severity, bool) {
	for i, name := range severityNames {
		if i > 0 && name == s {
			return Severity(i), true
		}
	}
	return SeverityNone, false
}

// Match is one rule that matched one line. Fields holds only the named
// capture groups and JSON fields that the rule allow-lists, with secrets
// masked.
type Match struct {
	RuleID   string
	Category Category
	Severity Severity
	Line     Line
	Fields   map[string]string
}
