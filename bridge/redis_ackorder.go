package bridge

import (
	"hash/maphash"
	"sync"
)

// In Redis Cluster mode each stream shard has its own publisher goroutine
// (redis_publish.go), so that a stalled master holds back only the
// messages of its own shards. Their answers then come in any order, while
// PublishAsync promises a client's answers in the order it queued them: a
// session acknowledges its PUBLISH packets in the order they arrived
// [MQTT-4.6.0-2], from the done callbacks, whatever their topics. ackOrder
// restores that order per client id (Message.ClientID): a connection's
// messages all carry its client id (never empty: the server assigns one
// to a client that sends none), and messages of one id from two
// goroutines (a takeover's old and new connection) are only ordered more
// strictly than needed. An answer that arrives early waits for the ones
// queued before it; one client's stalled message holds back only that
// client's later answers, never another client's.

// ackStripes spreads the client ids over locks, so that the publishers and
// the connections of different clients seldom wait for each other.
const ackStripes = 64

// ackOrder holds, per client id, the answers queued and not yet given.
type ackOrder struct {
	seed    maphash.Seed
	stripes [ackStripes]ackStripe
}

type ackStripe struct {
	mu    sync.Mutex
	lines map[string]*ackLine
}

// ackLine is one client id's answers, in the order they were queued.
type ackLine struct {
	queued []*pendingAck
	// giving is set while a goroutine calls the line's done callbacks: the
	// others only record their answer, so that callbacks never overlap.
	giving bool
}

type pendingAck struct {
	done     func(error)
	err      error
	answered bool
}

func newAckOrder() *ackOrder {
	o := &ackOrder{seed: maphash.MakeSeed()}
	for i := range o.stripes {
		o.stripes[i].lines = make(map[string]*ackLine)
	}
	return o
}

// queue records that key's next answer is done's, and returns the
// function that answers it: done runs once every answer queued before it
// for key has run, on the goroutine that gave the last of them.
func (o *ackOrder) queue(key string, done func(error)) func(error) {
	st := &o.stripes[maphash.String(o.seed, key)%ackStripes]
	a := &pendingAck{done: done}
	st.mu.Lock()
	l := st.lines[key]
	if l == nil {
		l = &ackLine{}
		st.lines[key] = l
	}
	l.queued = append(l.queued, a)
	st.mu.Unlock()
	return func(err error) { st.answer(key, l, a, err) }
}

// answer records a's result and, unless another goroutine is at it, gives
// every answer at the head of l that has its result.
func (st *ackStripe) answer(key string, l *ackLine, a *pendingAck, err error) {
	st.mu.Lock()
	a.err, a.answered = err, true
	if l.giving {
		st.mu.Unlock()
		return
	}
	l.giving = true
	var ready []*pendingAck
	for {
		n := 0
		for n < len(l.queued) && l.queued[n].answered {
			n++
		}
		if n == 0 {
			break
		}
		ready = append(ready[:0], l.queued[:n]...)
		clear(l.queued[:n])
		l.queued = l.queued[n:]
		st.mu.Unlock()
		for _, r := range ready {
			r.done(r.err)
		}
		st.mu.Lock()
	}
	l.giving = false
	if len(l.queued) == 0 {
		delete(st.lines, key)
	}
	st.mu.Unlock()
}
