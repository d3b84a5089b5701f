//go:build race

package rules

// raceEnabled reports to tests whether the race detector is on. It makes
// sync.Pool drop items at random, so pooled scratch space allocates.
const raceEnabled = true
