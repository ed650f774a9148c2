package brokertest

import "testing"

type message struct{ topic string }

// The fake records what it takes with its QoS and group, refuses after its
// budget, reports idle only when asked to, and counts takeovers.
func TestSubscriber(t *testing.T) {
	var s Subscriber[message]
	if s.Idle() || !(&Subscriber[message]{AlwaysIdle: true}).Idle() {
		t.Fatal("Idle does not follow AlwaysIdle")
	}
	var hooked []string
	s.OnDeliver = func(m *message, _ byte) { hooked = append(hooked, m.topic) }
	if !s.Deliver(&message{"a"}, 1) || !s.DeliverShared(&message{"b"}, 2, "$share/g/b") {
		t.Fatal("a fresh subscriber refused a message")
	}
	s.RefuseAfter(1)
	if !s.Deliver(&message{"c"}, 0) || s.Deliver(&message{"d"}, 0) {
		t.Fatal("RefuseAfter(1) did not take one message and refuse the next")
	}
	got := s.WaitFor(t, 3)
	if len(got) != 3 || got[0].Message.topic != "a" || got[0].QoS != 1 || got[0].Group != "" ||
		got[1].Group != "$share/g/b" || got[1].QoS != 2 || got[2].Message.topic != "c" {
		t.Fatalf("recorded %+v", got)
	}
	if len(hooked) != 3 {
		t.Fatalf("OnDeliver ran for %v, want the 3 messages taken", hooked)
	}
	taken := 0
	s.OnTakeOver = func() { taken++ }
	s.TakeOver()
	if s.TakenOver() != 1 || taken != 1 {
		t.Fatalf("TakenOver %d, hook ran %d times; want 1 each", s.TakenOver(), taken)
	}
}
