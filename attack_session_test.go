package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

func payloads(ps []*packets.Publish) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s@%d", p.Payload, p.QoS))
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// ATTACK: persistent session across replicas, run twice on the same Redis,
// reusing client id and topics; overlapping filters; unsubscribe/resubscribe.
func TestAttack_PersistentHistory(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		A, B := d.pub().Addr(), d.sub().Addr()
		id := "attack-hist"
		p := mqtttest.Dial(t, A)
		p.MustConnect(&packets.Connect{ClientID: "attack-hist-pub", CleanSession: true, KeepAlive: 60})
		pid := uint16(0)
		next := func() uint16 { pid++; return pid }
		for round := range 3 {
			// wipe whatever session is left, then begin a new one
			c := mqtttest.Dial(t, B)
			c.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 60})
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
			for _, tp := range []string{"h/a/x", "h/b/x", "h/a/y", "other/q"} {
				p.Publish(next(), 1, tp, fmt.Sprintf("pre-%d-%s", round, tp), false)
				p.Publish(next(), 2, tp, fmt.Sprintf("pre2-%d-%s", round, tp), false)
			}
			s := mqtttest.Dial(t, B)
			if ack := s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 60}); ack.SessionPresent {
				t.Errorf("round %d: session present after clean wipe", round)
			}
			s.Subscribe(1, packets.Subscription{Filter: "h/+/x", QoS: 2}, packets.Subscription{Filter: "h/a/#", QoS: 1})
			if got := s.Drain(300 * time.Millisecond); len(got) > 0 {
				t.Errorf("round %d: got pre-subscription messages online: %s", round, payloads(got))
			}
			s.Send(&packets.Disconnect{})
			s.ExpectClosed(waitTimeout)
			p.Publish(next(), 1, "h/a/x", fmt.Sprintf("off1-%d", round), false)
			p.Publish(next(), 2, "h/a/x", fmt.Sprintf("off2-%d", round), false)
			p.Publish(next(), 2, "h/a/y", fmt.Sprintf("off3-%d", round), false)
			p.Publish(next(), 0, "h/b/x", fmt.Sprintf("off0-%d", round), false)
			p.Publish(next(), 1, "other/q", fmt.Sprintf("offother-%d", round), false)
			s = mqtttest.Dial(t, A)
			if ack := s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 60}); !ack.SessionPresent {
				t.Errorf("round %d: session not present", round)
			}
			got := s.Drain(700 * time.Millisecond)
			want := fmt.Sprintf("off1-%d@1,off2-%d@2,off3-%d@1", round, round, round)
			if payloads(got) != want {
				t.Errorf("round %d: offline replay got %q want %q", round, payloads(got), want)
			}
			// unsubscribe h/+/x, publish on h/b/x, resubscribe: h/b/x must never come.
			s.Send(&packets.Unsubscribe{PacketID: 5, Filters: []string{"h/+/x"}})
			mqtttest.Expect[*packets.Unsuback](s)
			p.Publish(next(), 1, "h/b/x", fmt.Sprintf("gap-%d", round), false)
			s.Subscribe(6, packets.Subscription{Filter: "h/+/x", QoS: 2})
			p.Publish(next(), 2, "h/b/x", fmt.Sprintf("live-%d", round), false)
			got = s.Drain(700 * time.Millisecond)
			if w := fmt.Sprintf("live-%d@2", round); payloads(got) != w {
				t.Errorf("round %d: after resubscribe got %q want %q", round, payloads(got), w)
			}
			s.Send(&packets.Disconnect{})
			s.ExpectClosed(waitTimeout)
			p.Publish(next(), 1, "h/b/x", fmt.Sprintf("off4-%d", round), false)
			s = mqtttest.Dial(t, B)
			s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 60})
			got = s.Drain(700 * time.Millisecond)
			if w := fmt.Sprintf("off4-%d@1", round); payloads(got) != w {
				t.Errorf("round %d: second offline replay got %q want %q", round, payloads(got), w)
			}
			s.Send(&packets.Disconnect{})
			s.ExpectClosed(waitTimeout)
		}
	})
}
