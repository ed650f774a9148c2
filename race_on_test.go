//go:build race

package main

// raceEnabled reports that the race detector is on: it multiplies the CPU
// cost of every memory access, so latency bounds are enforced only by the
// run without it (test.sh runs the latency tests again without -race).
const raceEnabled = true
