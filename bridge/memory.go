package bridge

import "github.com/bridgemq/server/broker"

// Memory is the single node, with no external service: the local broker
// core with an in-memory Store and a loopback Cluster (broker.NewMemory).
// The alias keeps the bridge's callers compiling until they move.
type Memory = broker.Broker

// MemoryOptions is broker.MemoryOptions.
type MemoryOptions = broker.MemoryOptions

// NewMemory returns broker.NewMemory(o).
func NewMemory(o MemoryOptions) *Memory { return broker.NewMemory(o) }

var _ Bridge = (*Memory)(nil)
