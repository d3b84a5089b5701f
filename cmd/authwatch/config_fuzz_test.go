package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/authwatch/authwatch/internal/configfile"
)

// FuzzDecodeConfig decodes arbitrary YAML into the composed config: the
// check that names paths must never accept what the decoder then rejects,
// and nothing may panic.
func FuzzDecodeConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/config/*.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("policies: [{name: a, threshold: 1, window: 1m}]\nstorm: {workloads: 3, window: 1m}\n"))
	f.Add([]byte("alerting: {webhooks: [{url: 'http://127.0.0.1', secret_env: K, max_attempts: 0x10}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaultConfig()
		_, err := configfile.Decode("fuzz.yaml", data, &cfg)
		if errors.Is(err, configfile.ErrWalk) {
			t.Fatalf("check accepted what yaml.v3 rejects: %v\ninput:\n%s", err, data)
		}
		if err == nil {
			_ = cfg.validate()
		}
	})
}
