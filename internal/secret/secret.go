// Package secret holds credential values so that they cannot reach a log,
// an error string or a formatted message by accident.
package secret

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Redacted is what a Value prints in place of its content.
const Redacted = "[REDACTED]"

// Value is a credential such as a token, a password or a webhook key.
// Formatting it with any verb, marshalling it as JSON or logging it through
// slog yields Redacted; only Reveal returns the content.
type Value struct {
	v string
}

// New wraps s.
func New(s string) Value { return Value{v: s} }

// FromFile reads a credential from path, trimming one trailing newline
// sequence as kubectl-created Secrets and editors leave it. The error names
// the path, never the content.
func FromFile(path string) (Value, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Value{}, fmt.Errorf("secret: read %s: %w", path, err)
	}
	return Value{v: strings.TrimRight(string(b), "\r\n")}, nil
}

// FromEnv reads a credential from the environment variable name.
func FromEnv(name string) (Value, error) {
	s, ok := os.LookupEnv(name)
	if !ok {
		return Value{}, fmt.Errorf("secret: environment variable %s is not set", name)
	}
	return Value{v: s}, nil
}

// Reveal returns the content. Call it only where the value leaves for its
// destination: an HTTP header, a Secret patch.
func (s Value) Reveal() string { return s.v }

// IsZero reports whether the value is empty.
func (s Value) IsZero() bool { return s.v == "" }

// String implements fmt.Stringer.
func (s Value) String() string { return Redacted }

// GoString implements fmt.GoStringer so that %#v redacts too.
func (s Value) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb redacts.
func (s Value) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue implements slog.LogValuer.
func (s Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (s Value) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler, which YAML encoders use.
func (s Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
