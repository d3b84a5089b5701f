package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/authwatch/authwatch/rules"
)

// configMapDir lays out a directory as the kubelet mounts a ConfigMap:
// the data in a timestamped directory, a `..data` symlink to it, and
// config.yaml as a symlink through `..data`.
type configMapDir struct {
	t       *testing.T
	dir     string
	version int
}

func newConfigMapDir(t *testing.T, content string) *configMapDir {
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.update(content)
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(c.dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMapDir) path() string { return filepath.Join(c.dir, "config.yaml") }

// update writes content as the kubelet does: a new timestamped directory,
// a new symlink renamed over `..data`, then the old directory removed.
func (c *configMapDir) update(content string) {
	c.t.Helper()
	c.version++
	data := fmt.Sprintf("..2026_12_04_22_00_%02d.%d", c.version, 1000+c.version)
	if err := os.Mkdir(filepath.Join(c.dir, data), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, data, "config.yaml"), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	if err := os.Symlink(data, filepath.Join(c.dir, "..data_tmp")); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			c.t.Fatal(err)
		}
	}
}

// matchesRule reports whether m matches line with the rule id.
func matchesRule(m *rules.Matcher, line, id string) bool {
	for _, got := range m.Match(&rules.Line{Text: []byte(line)}, nil) {
		if got.RuleID == id {
			return true
		}
	}
	return false
}

func TestReloadOnConfigMapSwap(t *testing.T) {
	const expired = "TokenExpiredError: jwt expired"
	mount := newConfigMapDir(t, "rules:\n  disable: [token-expired]\n")
	cfg, err := loadConfig(mount.path())
	if err != nil {
		t.Fatal(err)
	}
	matcher, err := compileRules(cfg.Rules)
	if err != nil {
		t.Fatal(err)
	}
	if matchesRule(matcher, expired, "token-expired") {
		t.Fatal("the disabled rule token-expired matched before any reload")
	}
	reg, dm := newRegistry()
	dm.reloadOK.Set(1)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pipe, err := newPipeline(reg, matcher)
	if err != nil {
		t.Fatal(err)
	}
	stage, err := newIncidentStage(log, reg, cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	changed := make(chan struct{}, 1)
	cw := &configFileWatcher{log: log, path: mount.path(), interval: 20 * time.Millisecond}
	wg.Go(func() { cw.Run(ctx, changed) })
	wg.Go(func() { reloadConfig(ctx, log, mount.path(), pipe, stage, dm, changed) })

	// A valid new version is swapped in.
	time.Sleep(100 * time.Millisecond) // the watcher reads its baseline first
	mount.update("rules:\n  disable: []\n")
	waitUntil(t, "the new rules in force", func() bool { return matchesRule(pipe.matcher.Load(), expired, "token-expired") })
	if got := testutil.ToFloat64(dm.reloadOK); got != 1 {
		t.Errorf("authwatch_config_last_reload_successful = %v after a valid change, want 1", got)
	}
	if !strings.Contains(logs.String(), "trigger=file_changed") {
		t.Errorf("the reload log does not name the file change:\n%s", logs.String())
	}

	// An invalid version is rejected whole, and the running rules stay.
	running := pipe.matcher.Load()
	mount.update("rules:\n  disable: []\n  disabled: [token-expired]\n")
	waitUntil(t, "the failed reload", func() bool { return testutil.ToFloat64(dm.reloadOK) == 0 })
	if pipe.matcher.Load() != running {
		t.Error("an invalid config replaced the running rules")
	}
	out := logs.String()
	if !strings.Contains(out, "config reload failed") || !strings.Contains(out, "rules.disabled") {
		t.Errorf("the failed reload is not logged with the YAML path rules.disabled:\n%s", out)
	}

	// Writing the same content again is no change: no reload follows.
	before := strings.Count(logs.String(), "config file changed")
	mount.update("rules:\n  disable: []\n  disabled: [token-expired]\n")
	time.Sleep(200 * time.Millisecond)
	if after := strings.Count(logs.String(), "config file changed"); after != before {
		t.Errorf("%d reloads without a change of content", after-before)
	}

	// Fixing the file restores a successful reload.
	mount.update("rules:\n  disable: [token-expired]\n")
	waitUntil(t, "the fixed config in force", func() bool { return testutil.ToFloat64(dm.reloadOK) == 1 })
	if matchesRule(pipe.matcher.Load(), expired, "token-expired") {
		t.Error("the fixed config did not disable token-expired again")
	}
}

// TestConfigFileWatcherDebounces checks that content that changes on
// every poll triggers nothing until it stays the same for one interval,
// and then exactly one reload.
func TestConfigFileWatcherDebounces(t *testing.T) {
	mount := newConfigMapDir(t, "rules: {}\n")
	synctest.Test(t, func(t *testing.T) {
		cw := &configFileWatcher{log: slog.New(slog.NewTextHandler(io.Discard, nil)), path: mount.path(), interval: 50 * time.Millisecond}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		changed := make(chan struct{}, 10)
		go cw.Run(ctx, changed)

		// Polls at 50, 100, ... ms; edits at 75, 125, ... ms, so each
		// poll sees new content.
		time.Sleep(75 * time.Millisecond)
		for i := range 8 {
			mount.update(fmt.Sprintf("rules: {}\n# edit %d\n", i))
			time.Sleep(50 * time.Millisecond)
		}
		if n := len(changed); n != 0 {
			t.Errorf("reloads while the content changed on every poll = %d, want 0", n)
		}
		time.Sleep(time.Second)
		if n := len(changed); n != 1 {
			t.Errorf("reloads after the content settled = %d, want 1", n)
		}
	})
}
