package session

import (
	"slices"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/topics"
)

// MQTT 5.0 subscription options and Subscription Identifiers are applied
// here, by the connection, to each message as the writer sends it (fill):
// every message reaches the socket through fill, whichever way it came
// (live, retained, stored, replayed from the streams), so one place serves
// them all, on the replica the subscriber is connected to. The broker core
// only keeps the options with the session; its fan-out is the same for
// every client. A client that uses no options (subOpts nil) pays one nil
// check per message; one that does pays a match of its filters per
// message.

// setOptionsLocked records the options of the subscription to filter;
// s.mu is held.
func (s *Session) setOptionsLocked(filter string, o broker.SubOptions) {
	if o.IsZero() {
		delete(s.subOpts, filter)
		return
	}
	if s.subOpts == nil {
		s.subOpts = make(map[string]broker.SubOptions)
	}
	s.subOpts[filter] = o
}

// sendsRetained reports whether a subscription with options o, which
// existed before its SUBSCRIBE when existed, gets the retained messages
// of its filter now: Retain Handling 0 always [MQTT-3.3.1-9], 1 only when
// it is new [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
func sendsRetained(o broker.SubOptions, existed bool) bool {
	switch o.RetainHandling {
	case 1:
		return !existed
	case 2:
		return false
	}
	return true
}

// resendOptionsLocked gives p, the re-sending of msg unacknowledged when
// the session was stored, the Subscription Identifiers of the matching
// subscriptions [MQTT-3.3.4-3]; its QoS and RETAIN flag were settled when
// it was first sent [MQTT-4.4.0-1]. s.mu is held and s.subOpts is not nil.
func (s *Session) resendOptionsLocked(msg *broker.Message, p *packets.Publish) {
	// As a retained message sent on subscribe: neither No Local nor
	// Retain As Published applies, so only the identifiers change.
	s.applyOptionsLocked(&outgoing{msg: msg, qos: p.QoS, retain: true}, p)
}

// applyOptionsLocked applies the options of the client's subscriptions
// matching o's topic to o, about to be sent as p; s.mu is held and
// s.subOpts is not nil. It returns false when o is not to be sent: every
// matching subscription has No Local and o is the client's own
// publication [MQTT-3.8.3-3]. Otherwise, when some matching subscriptions
// were left out by No Local, o goes at the highest QoS of the others
// [MQTT-3.3.5-1]; a live message keeps its RETAIN flag when a matching
// subscription has Retain As Published [MQTT-3.3.1-13] (and has 0
// otherwise [MQTT-3.3.1-12]); and p carries the Subscription Identifiers
// of the matching subscriptions that have one [MQTT-3.3.4-3]
// [MQTT-3.3.4-4], in one copy.
//
// A retained message sent because of a new subscription (o.fed, or
// o.retain when it waited in a stored session) is not a publication being
// forwarded: No Local leaves it alone.
func (s *Session) applyOptionsLocked(o *outgoing, p *packets.Publish) bool {
	if o.fed {
		// Sent because of one new subscription: it carries that
		// SUBSCRIBE's identifier alone, not those of other subscriptions
		// it also matches, which did not cause it to flow (section 3.3.4).
		if o.subID != 0 && s.version == packets.Version5 {
			if p.Properties == nil {
				p.Properties = &packets.Properties{}
			}
			p.Properties.SubscriptionIdentifiers = []uint32{o.subID}
		}
		return true
	}
	own := !o.retain && o.msg.ClientID != "" && o.msg.ClientID == s.clientID
	var ids []uint32
	var best byte
	matched, excluded, rap := false, false, false
	consider := func(f string, q byte) {
		if !topics.MatchSubscription(f, o.msg.Topic) {
			return
		}
		opt := s.subOpts[f]
		if own && opt.NoLocal {
			excluded = true
			return
		}
		matched = true
		best = max(best, q)
		rap = rap || opt.RetainAsPublished
		if opt.ID != 0 {
			ids = append(ids, opt.ID)
		}
	}
	// A copy a shared subscription group handed this connection came
	// through that subscription alone, and any other copy through the
	// client's non-shared subscriptions: each copy takes the options of the
	// subscriptions it came through (a client may get a message once
	// through each, section 4.8.2).
	if o.shared {
		group := s.groupOf(*o)
		if q, ok := s.subs[group]; ok {
			consider(group, q)
		}
	} else {
		for f, q := range s.subs {
			if !topics.IsShared(f) {
				consider(f, q)
			}
		}
	}
	if excluded {
		if !matched {
			return false
		}
		o.qos = min(o.qos, best)
		p.QoS = o.qos
	}
	if rap && o.msg.Retain && !o.retain {
		o.retain, p.Retain = true, true
	}
	if len(ids) > 0 && s.version == packets.Version5 {
		slices.Sort(ids)
		if p.Properties == nil {
			p.Properties = &packets.Properties{}
		}
		p.Properties.SubscriptionIdentifiers = ids
	}
	return true
}
