//go:build race

package packets

// raceEnabled reports that the race detector is on. Under it, sync.Pool
// drops a quarter of what is put back at random, so fmt, which pools its
// printers, allocates a varying number of times per call and allocation
// counts gain slack.
const raceEnabled = true
