//go:build race

package rules

// raceEnabled tells tests that the race detector is on. It makes
// sync.Pool drop items at random, so pooled scratch space allocates.
const raceEnabled = true
