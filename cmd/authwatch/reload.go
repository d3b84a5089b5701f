package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/authwatch/authwatch/rules"
)

// configPollInterval is how often `authwatch run` reads the config file
// to notice a change. The kubelet updates a mounted ConfigMap about a
// minute after it changed, so a few seconds more do not matter, and
// reading one small file every few seconds costs nothing.
const configPollInterval = 5 * time.Second

// reloadConfig reloads the configuration on SIGHUP and on each value from
// changed. Rules take effect at once; a changed watch section needs a
// restart. A configuration that fails to load, validate or compile is
// rejected whole and the running one is kept.
func reloadConfig(ctx context.Context, log *slog.Logger, path string, pipe *pipeline, stage *incidentStage, dm *daemonMetrics, changed <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		var trigger string
		select {
		case <-ctx.Done():
			return
		case <-hup:
			trigger = "sighup"
		case <-changed:
			trigger = "file_changed"
		}
		cfg, err := loadConfig(path)
		var m *rules.Matcher
		if err == nil {
			m, err = compileRules(cfg.Rules)
		}
		if err == nil {
			err = stage.reload(ctx, cfg)
		}
		if err != nil {
			dm.reloadOK.Set(0)
			log.Error("config reload failed; keeping the running configuration", "config", path, "trigger", trigger, "err", err)
			continue
		}
		pipe.matcher.Store(m)
		dm.reloadOK.Set(1)
		dm.reloadTime.SetToCurrentTime()
		log.Info("config reloaded; watch changes take effect at the next restart", "config", path, "trigger", trigger)
	}
}

// configFileWatcher notices changes of the config file's content. It
// reads the file by its path each time, so it follows the symlinks of a
// mounted ConfigMap. The kubelet updates such a mount by writing a new
// timestamped directory and renaming a new `..data` symlink over the old
// one. That changes neither the file's path nor, reliably, its
// modification time, so the watcher compares content hashes.
type configFileWatcher struct {
	log      *slog.Logger
	path     string
	interval time.Duration
}

// Run polls the file every interval until ctx ends and sends on changed
// once new content has stayed the same for one more interval, so that a
// file written in several steps is reloaded once, when complete. A send
// that finds changed full is dropped, because the reload it would cause
// is already pending and reads the newest file. The content seen when Run
// starts is the baseline.
func (w *configFileWatcher) Run(ctx context.Context, changed chan<- struct{}) {
	applied, _ := w.hash()
	var pending []byte // content hash that differs from applied, not yet stable
	var lastErr string
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		sum, err := w.hash()
		if err != nil {
			// The reload would fail on the same error; it is logged once
			// until the file can be read again.
			if err.Error() != lastErr {
				lastErr = err.Error()
				w.log.Warn("config file unreadable; keeping the running configuration", "config", w.path, "err", err)
			}
			pending = nil
			continue
		}
		lastErr = ""
		switch {
		case bytes.Equal(sum, applied):
			pending = nil
		case bytes.Equal(sum, pending):
			applied, pending = sum, nil
			w.log.Info("config file changed, reloading", "config", w.path)
			select {
			case changed <- struct{}{}:
			default:
			}
		default:
			pending = sum
		}
	}
}

func (w *configFileWatcher) hash() ([]byte, error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return sum[:], nil
}
