package rules

import (
	"bytes"
	"regexp"

	"github.com/authwatch/authwatch/internal/credential"
)

// Masked replaces each secret that Mask finds.
const Masked = "***"

// secretKeys are key names whose values are credentials.
const secretKeys = `(?:(?:access|refresh|id|session|auth|bearer|csrf|xsrf|private|client|api|app)[_-]?token|token|(?:api|access|secret|private|client|signing|master|account)[_-]?key|apikey|secret|client_secret|password|passwd|pwd|passphrase|cookie|sig|signature|x-amz-security-token|x-goog-api-key)`

// maskers run in order; each replaces its secret group with Masked. Group 1
// is the text kept before the secret, when the pattern has one.
var (
	// Authorization headers in any notation: "Authorization: Bearer x",
	// "HTTP_AUTHORIZATION": "Token x", authorization=Basic x.
	// Group 2 is the scheme word; a value without one is masked only when
	// it looks like a credential, because "Authorization: denied" is prose.
	maskAuthHeader = regexp.MustCompile(`(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?((?:bearer|token|basic|digest|negotiate|apikey|sso-key)\s+)?)([^\s"',;)\]}]+)`)
	// A credential after its scheme word outside a header: "Bearer x",
	// "Token x" (Django REST Framework), "Basic x".
	maskScheme = regexp.MustCompile(`(?i)\b((?:bearer|token|basic)\s+)([A-Za-z0-9._~+/=-]{16,})`)
	// JSON Web Tokens (JWS compact form; the header always starts "eyJ").
	maskJWT = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)
	// Credentials in key=value pairs, in quoted "key": "value" pairs (JSON,
	// Python reprs) and in HTTP headers, unless the value is a placeholder
	// such as "none" (see credential.IsPlaceholder).
	maskKeyValue = regexp.MustCompile(`(?i)((?:\b|_)` + secretKeys + `\s*=\s*["']?|["'](?:[\w-]*[_-])?` + secretKeys + `["']\s*:\s*["']?|\b(?:x-api-key|x-auth-token|x-vault-token|private-token|cookie|set-cookie|x-amz-security-token|x-goog-api-key)\s*:\s*)([^\s"',;&})\]]+)`)
	// An unquoted "key: value" is masked only when the value looks like a
	// credential, because prose such as "invalid token: token is expired"
	// or "api-token: token in Secret town/api" has that shape.
	maskKeyColon = regexp.MustCompile(`(?i)((?:\b|_)` + secretKeys + `:\s*)([^\s"',;&})\]]+)`)
	// Passwords in URLs: scheme://user:password@host.
	maskURLUser = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^/\s:@"']+:)([^/\s@"']+)(@)`)
	// Vendor key formats: AWS access key ids, Slack, GitHub and GitLab
	// tokens, Google API keys.
	maskVendor = regexp.MustCompile(`\b(?:(?:AKIA|ASIA)[A-Z0-9]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35})\b`)
)

// Mask returns a copy of text with credentials replaced by Masked. It
// recognises bearer and Basic credentials, "Token <key>" headers,
// Authorization header values and JSON Web Tokens. It also masks the
// values of keys such as token, password, api_key or secret, passwords in
// URLs and well-known vendor key formats. It is meant for display and
// never returns text that shares memory with text.
//
// Where a value may be prose, as after "Bearer", "Token", an
// Authorization header without a scheme or an unquoted "key:", Mask
// hides it only when it looks like a credential (see
// credential.LooksLike), so "api-token: token in Secret town/api" stays
// readable. After "key=" it hides every value but placeholders such as
// "none" or "true". A credential in a format it does not know, such as a
// bare random string with no key before it, stays visible, and so does a
// lower-case word after "token:" or "Bearer".
func Mask(text []byte) []byte {
	out := bytes.Clone(text)
	if out == nil {
		out = []byte{}
	}
	// Each masker runs only when a word it needs occurs, because RE2 in
	// Go costs tens of microseconds a line and most lines hold no secret.
	if containsAnyFold(out, "authorization") {
		out = maskGroup(maskAuthHeader, out, 3, func(text []byte, loc []int) bool {
			return loc[4] >= 0 || credential.LooksLike(text[loc[6]:loc[7]])
		})
	}
	if hasSchemeCredential(out) {
		out = maskGroup(maskScheme, out, 2, secretLooksLikeCredential)
	}
	if bytes.Contains(out, []byte("eyJ")) {
		out = maskJWT.ReplaceAllLiteral(out, []byte(Masked))
	}
	if hasSecretKey(out) {
		out = maskGroup(maskKeyValue, out, 2, func(text []byte, loc []int) bool {
			return !credential.IsPlaceholder(text[loc[4]:loc[5]])
		})
		out = maskGroup(maskKeyColon, out, 2, secretLooksLikeCredential)
	}
	if bytes.Contains(out, []byte("://")) && bytes.IndexByte(out, '@') >= 0 {
		out = maskGroup(maskURLUser, out, 2, nil)
	}
	if containsAnyFold(out, "akia", "asia", "xox", "gh", "github_pat_", "glpat-", "aiza") {
		out = maskVendor.ReplaceAllLiteral(out, []byte(Masked))
	}
	return out
}

// hasSchemeCredential reports whether "bearer", "token" or "basic" is
// followed by spaces and 16 or more credential bytes, as maskScheme needs.
func hasSchemeCredential(text []byte) bool {
	for _, w := range [...]string{"bearer", "token", "basic"} {
		for off := 0; ; {
			i := indexFold(text[off:], []byte(w))
			if i < 0 {
				break
			}
			j := off + i + len(w)
			off = j
			k := j
			for k < len(text) && (text[k] == ' ' || text[k] == '\t') {
				k++
			}
			if k == j {
				continue
			}
			n := 0
			for k+n < len(text) && isCredentialByte(text[k+n]) {
				n++
			}
			if n >= 16 {
				return true
			}
		}
	}
	return false
}

func isCredentialByte(b byte) bool {
	return isWordByte(b) || b == '.' || b == '~' || b == '+' || b == '/' || b == '=' || b == '-'
}

// secretKeyEnds are the endings of the key names in secretKeys and of the
// header names that maskKeyValue matches.
var secretKeyEnds = [...]string{"token", "key", "secret", "password", "passwd", "pwd", "passphrase", "cookie", "sig", "signature"}

// hasSecretKey reports whether a key ending of secretKeyEnds is followed,
// after an optional quote and spaces, by ":" or "=", as maskKeyValue
// needs.
func hasSecretKey(text []byte) bool {
	for _, w := range secretKeyEnds {
		for off := 0; ; {
			i := indexFold(text[off:], []byte(w))
			if i < 0 {
				break
			}
			k := off + i + len(w)
			off = k
			if k < len(text) && (text[k] == '"' || text[k] == '\'') {
				k++
			}
			for k < len(text) && text[k] == ' ' {
				k++
			}
			if k < len(text) && (text[k] == ':' || text[k] == '=') {
				return true
			}
		}
	}
	return false
}

func containsAnyFold(text []byte, words ...string) bool {
	for _, w := range words {
		if indexFold(text, []byte(w)) >= 0 {
			return true
		}
	}
	return false
}

// maskGroup replaces submatch g of every match of re with Masked, unless it
// is already masked or accept, when not nil, rejects the match. accept gets
// the text and the submatch indexes of the match.
func maskGroup(re *regexp.Regexp, text []byte, g int, accept func(text []byte, loc []int) bool) []byte {
	locs := re.FindAllSubmatchIndex(text, -1)
	if locs == nil {
		return text
	}
	out := make([]byte, 0, len(text))
	last := 0
	for _, loc := range locs {
		start, end := loc[2*g], loc[2*g+1]
		if start < 0 || string(text[start:end]) == Masked {
			continue
		}
		if accept != nil && !accept(text, loc) {
			continue
		}
		out = append(out, text[last:start]...)
		out = append(out, Masked...)
		last = end
	}
	return append(out, text[last:]...)
}

// secretLooksLikeCredential is a maskGroup filter for patterns whose
// secret is submatch 2.
func secretLooksLikeCredential(text []byte, loc []int) bool {
	return credential.LooksLike(text[loc[4]:loc[5]])
}
