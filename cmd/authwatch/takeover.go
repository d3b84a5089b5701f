package main

import (
	"context"

	"github.com/authwatch/authwatch/internal/checkpoint"
)

// takeOver reads the checkpoint when this replica starts leading and
// restores the open incidents, Slack threads and queued notifications
// into stage. It returns the watcher's resume points. Reading at this
// moment, not at process start, matters for a standby: it may lead hours
// after it started, and only the checkpoint that the previous leader
// wrote last holds the current state. Without a store it returns nil.
func takeOver(ctx context.Context, store *checkpoint.Store, stage *incidentStage) ([]byte, error) {
	if store == nil {
		return nil, nil
	}
	if err := store.Load(ctx); err != nil {
		return nil, err
	}
	if err := stage.restore(store); err != nil {
		return nil, err
	}
	return store.Section(checkpointWatchSection), nil
}
