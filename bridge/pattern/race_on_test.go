//go:build race

package pattern

// raceEnabled: the race detector multiplies the cost of every memory
// access, so time bounds are enforced by the run without it (test.sh).
const raceEnabled = true
