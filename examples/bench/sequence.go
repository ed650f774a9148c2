package main

// sequenceTracker follows, for one subscriber, the sequence numbers received
// from each publisher: a message seen before is a duplicate, a new message
// with a sequence lower than the highest seen so far arrived out of order.
// Memory is one bit per sequence number per publisher.
type sequenceTracker struct {
	publishers []publisherSeen
	unique     uint64
	duplicates uint64
	outOfOrder uint64
}

// publisherSeen is what one subscriber has received from one publisher.
type publisherSeen struct {
	seen    []uint64 // bit s set: sequence s received
	highest int64    // highest sequence received, -1 for none
}

// newSequenceTracker returns a tracker for publishers 0..publishers-1,
// sized for about expectPerPublisher messages each (it grows past that).
func newSequenceTracker(publishers int, expectPerPublisher int) *sequenceTracker {
	t := &sequenceTracker{publishers: make([]publisherSeen, publishers)}
	for i := range t.publishers {
		t.publishers[i] = publisherSeen{seen: make([]uint64, 0, (expectPerPublisher+63)/64), highest: -1}
	}
	return t
}

// observe records sequence seq from publisher pub and reports whether it was
// new (false: a duplicate). pub must be below the publisher count.
func (t *sequenceTracker) observe(pub int, seq uint32) (fresh bool) {
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
