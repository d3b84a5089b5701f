package remediation

import (
	"strings"
	"testing"
	"time"

	"github.com/authwatch/authwatch/internal/secret"
)

// FuzzValidateToken feeds arbitrary tokens and issuer responses to the
// validation and the JSON token picker: neither may panic, and no
// validation error may repeat a token. Short tokens and tokens without a
// digit are not checked for repetition, because they can occur in the
// fixed wording of the messages.
func FuzzValidateToken(f *testing.F) {
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE5MDAwMDAwMDB9.c2ln", `{"access":"x"}`)
	f.Add("a.b.c", `{"data":{"token":1}}`)
	f.Add("", "[]")
	f.Add("9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f", `{"access":null}`)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, token, response string) {
		for _, format := range []string{"auto", "jwt", "opaque"} {
			err := validateToken(secret.New(token), format, time.Minute, now)
			if err != nil && len(token) >= 20 && strings.ContainsAny(token, "0123456789") && strings.Contains(err.Error(), token) {
				t.Fatalf("validation error repeats the token: %v", err)
			}
		}
		tok, err := pickJSONToken([]byte(response), "data.token")
		if err == nil && !strings.Contains(response, "token") {
			t.Fatalf("picked %d bytes from a response without the field", len(tok.Reveal()))
		}
	})
}
