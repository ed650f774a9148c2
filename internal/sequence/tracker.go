// Package sequence counts sequence-numbered messages as a subscriber
// receives them: new, duplicate, out of order. The load tool
// (examples/bench) and the fault tests (e2e_fault_test.go) both count
// loss and duplication with it, so "delivered" means the same in both.
package sequence

// Tracker follows, for one subscriber (or one set of subscribers counted
// together), the sequence numbers received from each publisher: a message
// seen before is a duplicate, a new message with a sequence lower than the
// highest seen so far arrived out of order. Memory is one bit per sequence
// number per publisher. A Tracker is not safe for concurrent use.
type Tracker struct {
	publishers []publisherSeen
	perPub     int
	unique     uint64
	duplicates uint64
	outOfOrder uint64
}

// publisherSeen is what has been received from one publisher.
type publisherSeen struct {
	seen    []uint64 // bit s set: sequence s received
	highest int64    // highest sequence received, -1 for none
}

// NewTracker returns a tracker sized for publishers 0..publishers-1 and
// about expectPerPublisher messages each; it grows past both.
func NewTracker(publishers, expectPerPublisher int) *Tracker {
	t := &Tracker{perPub: expectPerPublisher}
	t.grow(publishers)
	return t
}

func (t *Tracker) grow(publishers int) {
	for len(t.publishers) < publishers {
		t.publishers = append(t.publishers, publisherSeen{seen: make([]uint64, 0, (t.perPub+63)/64), highest: -1})
	}
}

// Observe records sequence seq from publisher pub (0 or above) and reports
// whether it was new (false: a duplicate).
func (t *Tracker) Observe(pub int, seq uint32) (fresh bool) {
	if pub >= len(t.publishers) {
		t.grow(pub + 1)
	}
	p := &t.publishers[pub]
	word, bit := int(seq/64), uint64(1)<<(seq%64)
	if word >= len(p.seen) {
		p.seen = append(p.seen, make([]uint64, word+1-len(p.seen))...)
	}
	if p.seen[word]&bit != 0 {
		t.duplicates++
		return false
	}
	p.seen[word] |= bit
	t.unique++
	if int64(seq) < p.highest {
		t.outOfOrder++
	} else {
		p.highest = int64(seq)
	}
	return true
}

// Has reports whether sequence seq from publisher pub has been received.
func (t *Tracker) Has(pub int, seq uint32) bool {
	if pub < 0 || pub >= len(t.publishers) {
		return false
	}
	p := &t.publishers[pub]
	word := int(seq / 64)
	return word < len(p.seen) && p.seen[word]&(uint64(1)<<(seq%64)) != 0
}

// Publishers is how many publishers the tracker holds room for: the count
// it was made with, or one more than the highest publisher observed.
func (t *Tracker) Publishers() int { return len(t.publishers) }

// Unique is how many distinct messages have been received.
func (t *Tracker) Unique() uint64 { return t.unique }

// Duplicates is how many receptions repeated a message already received.
func (t *Tracker) Duplicates() uint64 { return t.duplicates }

// OutOfOrder is how many new messages had a lower sequence than one
// already received from the same publisher.
func (t *Tracker) OutOfOrder() uint64 { return t.outOfOrder }
