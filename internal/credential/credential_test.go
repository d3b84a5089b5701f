package credential

import "testing"

func TestLooksLike(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"abc12", false}, // shorter than 6 bytes
		{"abc123", true},
		{"AbcDef", true},
		{"denied", false},
		{"town-builder/town-builder-secrets", false},
		{"abcdefghijklmnopqrst", true}, // a run of 20 letters
		{"abcdefghij-klmnopqrst", false},
		{"eyJhbGciOiJIUzI1NiJ9.e30.sig", true},
	} {
		if got := LooksLike(tc.value); got != tc.want {
			t.Errorf("LooksLike(%q) = %v, want %v", tc.value, got, tc.want)
		}
		if got := LooksLike([]byte(tc.value)); got != tc.want {
			t.Errorf("LooksLike([]byte(%q)) = %v, want %v", tc.value, got, tc.want)
		}
	}
}

func TestIsPlaceholder(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"none", true},
		{"NULL", true},
		{"[Redacted]", true},
		{"maſked", true}, // Unicode case folding, as strings.EqualFold does
		{"****", true},
		{"xxxx", true},
		{"X", true},
		{"xxXx", false},
		{"*x*", false},
		{"", false},
		{"hunter2", false},
	} {
		if got := IsPlaceholder(tc.value); got != tc.want {
			t.Errorf("IsPlaceholder(%q) = %v, want %v", tc.value, got, tc.want)
		}
		if got := IsPlaceholder([]byte(tc.value)); got != tc.want {
			t.Errorf("IsPlaceholder([]byte(%q)) = %v, want %v", tc.value, got, tc.want)
		}
	}
}
