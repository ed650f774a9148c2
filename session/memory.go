package session

import (
	"runtime/debug"
	"sync"
	"time"
)

// returnMemoryAfter is the queue size, in bytes, past which a connection's
// end hands freed memory back to the operating system at once.
const returnMemoryAfter = 16 << 20

// returnMemoryEvery bounds how often that happens: each call is a full
// garbage collection.
const returnMemoryEvery = 5 * time.Second

var memoryReturn struct {
	mu      sync.Mutex
	last    time.Time
	pending bool
}

// returnMemory gives the memory a large queue held back to the operating
// system soon after its connection ended. Go's background scavenger would
// return it only slowly, so a subscriber that never read would leave the
// replica's RSS at its high-water mark for minutes. At most one
// debug.FreeOSMemory runs per returnMemoryEvery; calls in between are
// folded into the next one.
func returnMemory() {
	memoryReturn.mu.Lock()
	defer memoryReturn.mu.Unlock()
	if memoryReturn.pending {
		return
	}
	memoryReturn.pending = true
	wait := max(0, returnMemoryEvery-time.Since(memoryReturn.last))
	time.AfterFunc(wait, func() {
		memoryReturn.mu.Lock()
		memoryReturn.pending = false
		memoryReturn.last = time.Now()
		memoryReturn.mu.Unlock()
		debug.FreeOSMemory()
	})
}
