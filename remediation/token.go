package remediation

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/authwatch/authwatch/internal/secret"
)

// maxTokenLength bounds a token; anything longer is taken for garbage.
const maxTokenLength = 16 << 10

// ErrInvalidToken marks a token that failed validation.
var ErrInvalidToken = errors.New("remediation: invalid token")

// validateToken checks a new token against the target's format. The
// errors never contain the token.
func validateToken(tok secret.Value, format string, minValidity time.Duration, now time.Time) error {
	s := tok.Reveal()
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(s) > maxTokenLength {
		return fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrInvalidToken, len(s), maxTokenLength)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: contains whitespace or a control character at byte %d", ErrInvalidToken, i)
		}
	}

	looksJWT := strings.Count(s, ".") == 2
	switch {
	case format == "opaque":
		return nil
	case format == "jwt" && !looksJWT:
		return fmt.Errorf("%w: not a JWT (expected three dot-separated parts)", ErrInvalidToken)
	case !looksJWT:
		return nil
	}

	exp, ok, err := jwtExpiry(s)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !ok {
		if format == "jwt" {
			return fmt.Errorf("%w: JWT has no exp claim", ErrInvalidToken)
		}
		return nil
	}
	if left := exp.Sub(now); left < minValidity {
		return fmt.Errorf("%w: JWT expires at %s, %s from now, less than min_validity %s",
			ErrInvalidToken, exp.UTC().Format(time.RFC3339), left.Round(time.Second), minValidity)
	}
	return nil
}

// jwtExpiry returns the exp claim of a JWT. It does not check the
// signature: authwatch holds no key, and the issuer checks it anyway.
func jwtExpiry(s string) (exp time.Time, ok bool, err error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return time.Time{}, false, errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false, errors.New("JWT payload is not base64url")
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, false, errors.New("JWT payload is not a JSON object")
	}
	if claims.Exp == nil {
		return time.Time{}, false, nil
	}
	f, err := claims.Exp.Float64()
	if err != nil {
		return time.Time{}, false, errors.New("JWT exp claim is not a number")
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true, nil
}
