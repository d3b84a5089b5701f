// Package credential distinguishes credentials from prose and
// placeholder values. rules.Mask and the alert redaction in alerting
// share it, so that both judge a value after a secret key the same way.
package credential

import "strings"

// LooksLike distinguishes a credential from a word of prose or a resource
// name such as "town-builder/town-builder-secrets". A value of at least 6
// bytes is a credential when it contains a digit, mixes letter cases, or
// has a run of 20 or more letters and digits with no separator.
func LooksLike[T string | []byte](v T) bool {
	if len(v) < 6 {
		return false
	}
	var digit, upper, lower bool
	run, maxRun := 0, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case '0' <= c && c <= '9':
			digit = true
		case 'A' <= c && c <= 'Z':
			upper = true
		case 'a' <= c && c <= 'z':
			lower = true
		default:
			run = 0
			continue
		}
		run++
		maxRun = max(maxRun, run)
	}
	return digit || (upper && lower) || maxRun >= 20
}

// placeholders are values after a secret key that stand for no
// credential.
var placeholders = [...]string{"none", "null", "nil", "true", "false", "yes", "no", "empty", "unset", "missing", "invalid", "expired", "redacted", "hidden", "masked", "<redacted>", "[redacted]"}

// IsPlaceholder reports whether v is a placeholder, in any case, or a run
// of one masking character such as "xxxx" or "****".
func IsPlaceholder[T string | []byte](v T) bool {
	for _, p := range placeholders {
		if strings.EqualFold(string(v), p) {
			return true
		}
	}
	if len(v) == 0 || (v[0] != '*' && v[0] != 'x' && v[0] != 'X') {
		return false
	}
	for i := 1; i < len(v); i++ {
		if v[i] != v[0] {
			return false
		}
	}
	return true
}
