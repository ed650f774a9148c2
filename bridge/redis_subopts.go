package bridge

import (
	"fmt"
	"strconv"
	"strings"
)

// A persistent session's subscription is stored in <p>sub:<id> as filter →
// value. The value is the MQTT 5.0 subscription options byte in decimal
// (section 3.8.3.1: bits 0-1 QoS, bit 2 No Local, bit 3 Retain As
// Published, bits 4-5 Retain Handling), followed by ":<id>" when the
// subscription has a Subscription Identifier. A subscription without
// options is "0", "1" or "2", its QoS alone: what every version of the
// bridge wrote, so that existing sessions read back unchanged.
const (
	subNoLocal           = 0x04
	subRetainAsPublished = 0x08
	subRetainHandling    = 0x30
)

// encodeSubscription returns the stored value of a subscription at qos
// with options o.
func encodeSubscription(qos byte, o SubOptions) string {
	b := qos | o.RetainHandling<<4
	if o.NoLocal {
		b |= subNoLocal
	}
	if o.RetainAsPublished {
		b |= subRetainAsPublished
	}
	s := strconv.Itoa(int(b))
	if o.ID != 0 {
		s += ":" + strconv.FormatUint(uint64(o.ID), 10)
	}
	return s
}

// decodeSubscription reads a value encodeSubscription wrote.
func decodeSubscription(v string) (qos byte, o SubOptions, err error) {
	opts, id, hasID := strings.Cut(v, ":")
	n, err := strconv.ParseUint(opts, 10, 8)
	if err != nil || n&0xC3 == 3 || n&^0x3F != 0 || n&subRetainHandling == subRetainHandling {
		return 0, o, fmt.Errorf("stored subscription %q: not an options byte", v)
	}
	b := byte(n)
	o = SubOptions{NoLocal: b&subNoLocal != 0, RetainAsPublished: b&subRetainAsPublished != 0,
		RetainHandling: (b & subRetainHandling) >> 4}
	if hasID {
		i, err := strconv.ParseUint(id, 10, 32)
		if err != nil || i == 0 {
			return 0, o, fmt.Errorf("stored subscription %q: bad subscription identifier", v)
		}
		o.ID = uint32(i)
	}
	return b & 0x03, o, nil
}

// subscriptionArgs returns the HSET field/value pairs of subs, whose
// options opts holds.
func subscriptionArgs(subs map[string]byte, opts map[string]SubOptions) []any {
	args := make([]any, 0, 2*len(subs))
	for f, q := range subs {
		args = append(args, f, encodeSubscription(q, opts[f]))
	}
	return args
}

// setOptions records the options of c's subscription to filter; r.mu is
// held. A client that never uses options keeps no map.
func (c *redisClient) setOptions(filter string, o SubOptions) {
	if o.IsZero() {
		delete(c.opts, filter)
		return
	}
	if c.opts == nil {
		c.opts = make(map[string]SubOptions)
	}
	c.opts[filter] = o
}
