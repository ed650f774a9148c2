package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// drain reads PUBLISHes for d after the last one, acknowledging as a client does.
func (c *rawClient) drain(d time.Duration) []*packets.Publish {
	c.t.Helper()
	var got []*packets.Publish
	for {
		p, err := c.read(d)
		if err != nil {
			if !isTimeout(err) {
				c.t.Fatalf("drain: %v", err)
			}
			return got
		}
		switch p := p.(type) {
		case *packets.Publish:
			switch p.QoS {
			case 1:
				c.send(&packets.Puback{PacketID: p.PacketID})
			case 2:
				c.send(&packets.Pubrec{PacketID: p.PacketID})
			}
			got = append(got, p)
		case *packets.Pubrel:
			c.send(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Unsuback, *packets.Suback:
		default:
			c.t.Fatalf("drain: got %T", p)
		}
	}
}

func payloads(ps []*packets.Publish) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s@%d", p.Payload, p.QoS))
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (c *rawClient) pub(id uint16, qos byte, topic, payload string, retain bool) {
	c.t.Helper()
	c.send(&packets.Publish{QoS: qos, PacketID: id, Topic: topic, Payload: []byte(payload), Retain: retain})
	switch qos {
	case 1:
		expect[*packets.Puback](c)
	case 2:
		expect[*packets.Pubrec](c)
		c.send(&packets.Pubrel{PacketID: id})
		expect[*packets.Pubcomp](c)
	}
}

// ATTACK: persistent session across replicas, run twice on the same Redis,
// reusing client id and topics; overlapping filters; unsubscribe/resubscribe.
func TestAttack_PersistentHistory(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		A, B := d.pub().Addr(), d.sub().Addr()
		id := "attack-hist"
		p := dialRaw(t, A)
		p.mustConnect(&packets.Connect{ClientID: "attack-hist-pub", CleanSession: true, KeepAlive: 60})
		pid := uint16(0)
		next := func() uint16 { pid++; return pid }
		for round := range 3 {
			// wipe whatever session is left, then begin a new one
			c := dialRaw(t, B)
			c.mustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 60})
			c.send(&packets.Disconnect{})
			c.expectClosed(waitTimeout)
			for _, tp := range []string{"h/a/x", "h/b/x", "h/a/y", "other/q"} {
				p.pub(next(), 1, tp, fmt.Sprintf("pre-%d-%s", round, tp), false)
				p.pub(next(), 2, tp, fmt.Sprintf("pre2-%d-%s", round, tp), false)
			}
			s := dialRaw(t, B)
			if ack := s.mustConnect(&packets.Connect{ClientID: id, KeepAlive: 60}); ack.SessionPresent {
				t.Errorf("round %d: session present after clean wipe", round)
			}
			s.subscribe(1, packets.Subscription{Filter: "h/+/x", QoS: 2}, packets.Subscription{Filter: "h/a/#", QoS: 1})
			if got := s.drain(300 * time.Millisecond); len(got) > 0 {
				t.Errorf("round %d: got pre-subscription messages online: %s", round, payloads(got))
			}
			s.send(&packets.Disconnect{})
			s.expectClosed(waitTimeout)
			p.pub(next(), 1, "h/a/x", fmt.Sprintf("off1-%d", round), false)
			p.pub(next(), 2, "h/a/x", fmt.Sprintf("off2-%d", round), false)
			p.pub(next(), 2, "h/a/y", fmt.Sprintf("off3-%d", round), false)
			p.pub(next(), 0, "h/b/x", fmt.Sprintf("off0-%d", round), false)
			p.pub(next(), 1, "other/q", fmt.Sprintf("offother-%d", round), false)
			s = dialRaw(t, A)
			if ack := s.mustConnect(&packets.Connect{ClientID: id, KeepAlive: 60}); !ack.SessionPresent {
				t.Errorf("round %d: session not present", round)
			}
			got := s.drain(700 * time.Millisecond)
			want := fmt.Sprintf("off1-%d@1,off2-%d@2,off3-%d@1", round, round, round)
			if payloads(got) != want {
				t.Errorf("round %d: offline replay got %q want %q", round, payloads(got), want)
			}
			// unsubscribe h/+/x, publish on h/b/x, resubscribe: h/b/x must never come.
			s.send(&packets.Unsubscribe{PacketID: 5, Filters: []string{"h/+/x"}})
			expect[*packets.Unsuback](s)
			p.pub(next(), 1, "h/b/x", fmt.Sprintf("gap-%d", round), false)
			s.subscribe(6, packets.Subscription{Filter: "h/+/x", QoS: 2})
			p.pub(next(), 2, "h/b/x", fmt.Sprintf("live-%d", round), false)
			got = s.drain(700 * time.Millisecond)
			if w := fmt.Sprintf("live-%d@2", round); payloads(got) != w {
				t.Errorf("round %d: after resubscribe got %q want %q", round, payloads(got), w)
			}
			s.send(&packets.Disconnect{})
			s.expectClosed(waitTimeout)
			p.pub(next(), 1, "h/b/x", fmt.Sprintf("off4-%d", round), false)
			s = dialRaw(t, B)
			s.mustConnect(&packets.Connect{ClientID: id, KeepAlive: 60})
			got = s.drain(700 * time.Millisecond)
			if w := fmt.Sprintf("off4-%d@1", round); payloads(got) != w {
				t.Errorf("round %d: second offline replay got %q want %q", round, payloads(got), w)
			}
			s.send(&packets.Disconnect{})
			s.expectClosed(waitTimeout)
		}
	})
}
