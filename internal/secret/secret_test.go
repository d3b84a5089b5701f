package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const token = "tok-3f9a1c77e2"

func TestValueNeverPrintsContent(t *testing.T) {
	v := New(token)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("test", "token", v)
	js, err := json.Marshal(struct{ T Value }{v})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", v),
		"%s":   fmt.Sprintf("%s", v),
		"%q":   fmt.Sprintf("%q", v),
		"%#v":  fmt.Sprintf("%#v", v),
		"%+v":  fmt.Sprintf("%+v", struct{ T Value }{v}),
		"%x":   fmt.Sprintf("%x", v),
		"slog": logs.String(),
		"json": string(js),
	}
	for name, out := range outputs {
		if strings.Contains(out, token) {
			t.Errorf("%s output contains the token: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s output lacks %q: %s", name, Redacted, out)
		}
	}
	if v.Reveal() != token {
		t.Errorf("Reveal() = %q, want the token", v.Reveal())
	}
}

func TestFromFileTrimsNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if v.Reveal() != token {
		t.Errorf("FromFile = %q, want %q", v.Reveal(), token)
	}
	_, err = FromFile(filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("FromFile(missing) error = %v, want one naming the path", err)
	}
}

func TestFromEnvMissing(t *testing.T) {
	_, err := FromEnv("AUTHWATCH_TEST_UNSET_VARIABLE")
	if err == nil || !strings.Contains(err.Error(), "AUTHWATCH_TEST_UNSET_VARIABLE") {
		t.Errorf("FromEnv error = %v, want one naming the variable", err)
	}
}
