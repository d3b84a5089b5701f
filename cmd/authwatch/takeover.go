package main

import (
	"context"

	"github.com/authwatch/authwatch/internal/checkpoint"
)

// takeOver reads the checkpoint when this replica starts leading and
// restores the open incidents, Slack threads and queued notifications
// into stage. It returns the watcher's resume points, or nil without a
// store. It reads when leading starts, not at process start, because a
// standby may lead hours after it started, and only the checkpoint that
// the previous leader wrote last holds the current state.
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
