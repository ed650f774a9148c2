package bridge

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// The contract suite: every behaviour the rest of the server relies on from
// a Bridge, checked once against each implementation (Memory, and Redis
// with a real redis-server). When the local broker core splits the bridge
// into its Store and Cluster seams, these tests move with it and keep
// holding for both.

// contractOptions are the bounds a contract test needs, set on either
// implementation.
type contractOptions struct {
	maxQueued int
	expiry    time.Duration
}

// contract runs fn against a fresh Memory and a fresh Redis bridge.
func contract(t *testing.T, o contractOptions, fn func(t *testing.T, b Bridge)) {
	t.Run("memory", func(t *testing.T) {
		m := broker.NewMemory(broker.MemoryOptions{MaxQueued: o.maxQueued, MessageExpiry: o.expiry})
		t.Cleanup(func() { _ = m.Close() })
		fn(t, m)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		fn(t, newTestRedis(t, srv, "a", func(ro *RedisOptions) {
			ro.MaxQueued = o.maxQueued
			ro.MessageExpiry = o.expiry
		}))
	})
}

// storeOffline detaches a persistent session with nothing pending.
func storeOffline(t *testing.T, b Bridge, id string, sub Subscriber) {
	t.Helper()
	detach(t, b, id, sub, &StoredSession{})
}

func queuedAtQoS(st *StoredSession) []string {
	var out []string
	for _, d := range st.Queued {
		out = append(out, fmt.Sprintf("%s@%d", d.Message.Payload, d.QoS))
	}
	return out
}

// Each client receives a message once, at the highest QoS among its
// matching subscriptions, capped by the message's QoS [MQTT-3.3.5-1].
func TestContract_FanOutOncePerClientAtHighestQoS_MQTT_3_3_5_1(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		one, two := &sink{}, &sink{}
		attach(t, b, "one", one, true)
		attach(t, b, "two", two, true)
		subscribe(t, b, "one", "c/+", 0)
		subscribe(t, b, "one", "c/#", 2)
		subscribe(t, b, "one", "c/x", 1)
		subscribe(t, b, "two", "c/x", 0)
		publish(t, b, rmsg("c/x", 2, "a"))
		publish(t, b, rmsg("c/x", 1, "b"))
		fence(t, b, b)
		if got := one.Deliveries(); len(got) != 2 || got[0].QoS != 2 || got[1].QoS != 1 {
			t.Fatalf("client one got %+v, want a@2 then b@1, once each", got)
		}
		if got := two.Deliveries(); len(got) != 2 || got[0].QoS != 0 || got[1].QoS != 0 {
			t.Fatalf("client two got %+v, want a@0 then b@0", got)
		}
	})
}

// A clean session discards the stored one [MQTT-3.1.2-6], and leaves
// nothing stored when it ends.
func TestContract_CleanSessionDiscardsStored_MQTT_3_1_2_6(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "c", s, false)
		subscribe(t, b, "c", "t", 1)
		storeOffline(t, b, "c", s)
		s = &sink{}
		if st := attach(t, b, "c", s, true); st != nil {
			t.Fatalf("clean Attach returned %+v, want nil", st)
		}
		detach(t, b, "c", s, nil)
		if st := attach(t, b, "c", &sink{}, false); st != nil {
			t.Fatalf("persistent Attach after a clean session found %+v, want nothing stored", st)
		}
	})
}

// While a persistent session is offline its QoS 1 and 2 messages are
// kept [MQTT-3.1.2-5], QoS 0 ones are not, and its subscriptions come back
// with it [MQTT-3.1.2-4].
func TestContract_OfflineSessionKeepsQoS1_MQTT_3_1_2_5(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "p", s, false)
		subscribe(t, b, "p", "q/#", 2)
		storeOffline(t, b, "p", s)
		publish(t, b, rmsg("q/0", 0, "zero"))
		publish(t, b, rmsg("q/1", 1, "one"))
		publish(t, b, rmsg("q/2", 2, "two"))
		fence(t, b, b)
		st := attach(t, b, "p", &sink{}, false)
		if st == nil {
			t.Fatal("no stored session")
		}
		if got, want := queuedAtQoS(st), []string{"one@1", "two@2"}; !slices.Equal(got, want) {
			t.Fatalf("queued %v, want %v", got, want)
		}
		if q, ok := st.Subscriptions["q/#"]; !ok || q != 2 || len(st.Subscriptions) != 1 {
			t.Fatalf("subscriptions %v, want q/# at 2", st.Subscriptions)
		}
	})
}

// The offline queue keeps the newest MaxQueued messages and counts the
// ones it drops.
func TestContract_OfflineQueueBoundKeepsNewest(t *testing.T) {
	contract(t, contractOptions{maxQueued: 3}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "p", s, false)
		subscribe(t, b, "p", "q", 1)
		storeOffline(t, b, "p", s)
		for i := range 5 {
			publish(t, b, rmsg("q", 1, fmt.Sprint(i)))
		}
		fence(t, b, b)
		st := attach(t, b, "p", &sink{}, false)
		if got, want := queuedAtQoS(st), []string{"2@1", "3@1", "4@1"}; !slices.Equal(got, want) {
			t.Fatalf("queued %v, want the newest three %v", got, want)
		}
		if n := b.Stats()["offline_queue_dropped"]; n != 2 {
			t.Fatalf("offline_queue_dropped = %d, want 2", n)
		}
	})
}

// A message kept for an offline session longer than the message expiry is
// not delivered when it returns.
func TestContract_OfflineQueueExpiry(t *testing.T) {
	const expiry = 300 * time.Millisecond
	contract(t, contractOptions{expiry: expiry}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "p", s, false)
		subscribe(t, b, "p", "q", 1)
		storeOffline(t, b, "p", s)
		publish(t, b, rmsg("q", 1, "old"))
		time.Sleep(expiry + 100*time.Millisecond)
		publish(t, b, rmsg("q", 1, "new"))
		fence(t, b, b)
		st := attach(t, b, "p", &sink{}, false)
		if got, want := queuedAtQoS(st), []string{"new@1"}; !slices.Equal(got, want) {
			t.Fatalf("queued %v, want only %v", got, want)
		}
	})
}

// A second connection with the same client id ends the first, which
// stores its session before the second gets it [MQTT-3.1.4-2].
func TestContract_TakeoverEndsTheOldConnection_MQTT_3_1_4_2(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		old := selfDetaching(b, "c", true)
		attach(t, b, "c", old, false)
		subscribe(t, b, "c", "t", 1)
		now := &sink{}
		st := attach(t, b, "c", now, false)
		if old.TakenOver() == 0 {
			t.Fatal("the old connection was not taken over")
		}
		if st == nil || st.Subscriptions["t"] != 1 {
			t.Fatalf("the new connection found %+v, want the old one's subscription", st)
		}
		publish(t, b, rmsg("t", 1, "x"))
		now.WaitFor(t, 1)
		fence(t, b, b)
		if n := len(old.Deliveries()); n != 0 {
			t.Fatalf("the old connection got %d messages after the takeover", n)
		}
	})
}

// A retained message is stored [MQTT-3.3.1-5], an empty one clears it
// [MQTT-3.3.1-10], and the stored ones are read page by page, bounded by
// bytes but never empty [MQTT-3.3.1-6].
func TestContract_RetainedStoredClearedAndPaged_MQTT_3_3_1_5(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		ctx := context.Background()
		for _, tp := range []string{"r/1", "r/2", "r/3"} {
			m := rmsg(tp, 1, "0123456789")
			m.Retain = true
			publish(t, b, m)
		}
		clear := rmsg("r/2", 1, "")
		clear.Retain = true
		publish(t, b, clear)
		var names []string
		eventually(t, func() string {
			var err error
			names, err = b.RetainedTopics(ctx, "r/#")
			if err != nil {
				return err.Error()
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"r/1", "r/3"}) {
				return fmt.Sprintf("RetainedTopics(r/#) = %v, want [r/1 r/3]", names)
			}
			return ""
		})
		page, read, err := b.RetainedMessages(ctx, names, 15)
		if err != nil || read != 1 || len(page) != 1 || page[0].Topic != "r/1" || !page[0].Retain {
			t.Fatalf("first page of 15 bytes: %d read, %+v, %v; want r/1 alone", read, page, err)
		}
		page, read, err = b.RetainedMessages(ctx, names[1:], 5)
		if err != nil || read != 1 || len(page) != 1 {
			t.Fatalf("a page smaller than one message: %d read, %d messages, %v; want that message", read, len(page), err)
		}
	})
}

// PublishAsync answers every message, in the order one goroutine queued
// them, and delivers them.
func TestContract_PublishAsyncAnswersInOrder(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "s", s, true)
		subscribe(t, b, "s", "a", 1)
		const n = 200
		answers := make(chan int, n)
		for i := range n {
			b.PublishAsync(context.Background(), rmsg("a", 1, fmt.Sprint(i)), func(err error) {
				if err != nil {
					t.Errorf("message %d: %v", i, err)
				}
				answers <- i
			})
		}
		for want := range n {
			if got := <-answers; got != want {
				t.Fatalf("answer %d came for message %d", want, got)
			}
		}
		s.WaitFor(t, n)
	})
}

// SubscribeMany routes every filter of a SUBSCRIBE packet.
func TestContract_SubscribeManyRoutesEveryFilter(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "s", s, true)
		if err := b.SubscribeMany(context.Background(), "s", []Subscription{{Filter: "x", QoS: 0}, {Filter: "y/+", QoS: 1}}); err != nil {
			t.Fatal(err)
		}
		publish(t, b, rmsg("x", 1, "x"))
		publish(t, b, rmsg("y/z", 1, "y"))
		got := s.WaitFor(t, 2)
		if got[0].QoS != 0 || got[1].QoS != 1 {
			t.Fatalf("got %+v, want x at 0 and y/z at 1", got)
		}
	})
}

// A will that is due is published once [MQTT-3.1.2-8].
func TestContract_WillPublished_MQTT_3_1_2_8(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		watcher := &sink{}
		attach(t, b, "w", watcher, true)
		subscribe(t, b, "w", "will/#", 1)
		will := rmsg("will/c", 1, "gone")
		c := &sink{}
		if _, err := b.Attach(context.Background(), "c", "", c, broker.CleanSession(true), will); err != nil {
			t.Fatal(err)
		}
		published, err := b.PublishWill(context.Background(), "c", c, will)
		if err != nil || !published {
			t.Fatalf("PublishWill = %v, %v; want true", published, err)
		}
		detach(t, b, "c", c, nil)
		watcher.WaitFor(t, 1)
		fence(t, b, b)
		if n := len(watcher.Deliveries()); n != 1 {
			t.Fatalf("the will arrived %d times, want once", n)
		}
	})
}

// A bridge that can serve says so, and counts its offline queues.
func TestContract_ReadyAndStats(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		if err := b.Ready(context.Background()); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		st := b.Stats()
		for _, k := range []string{"offline_queue_dropped", "offline_queue_expired"} {
			if _, ok := st[k]; !ok {
				t.Errorf("Stats has no %s: %v", k, st)
			}
		}
	})
}

// A message that a closing connection refuses (it has taken the snapshot
// it hands to Detach) is kept for its stored session, not lost.
func TestContract_RefusedDeliveryKeptForStoredSession(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		s := &sink{}
		attach(t, b, "p", s, false)
		subscribe(t, b, "p", "q", 1)
		s.Refuse()
		publish(t, b, rmsg("q", 1, "late"))
		fence(t, b, b)
		storeOffline(t, b, "p", s)
		st := attach(t, b, "p", &sink{}, false)
		if got, want := queuedAtQoS(st), []string{"late@1"}; !slices.Equal(got, want) {
			t.Fatalf("queued %v, want %v", got, want)
		}
	})
}

// A Detach from a connection that was taken over changes nothing: the
// client id belongs to the new connection [MQTT-3.1.4-2].
func TestContract_DetachAfterTakeoverChangesNothing_MQTT_3_1_4_2(t *testing.T) {
	contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
		old := selfDetaching(b, "c", false)
		attach(t, b, "c", old, true)
		now := &sink{}
		attach(t, b, "c", now, true)
		subscribe(t, b, "c", "t", 1)
		detach(t, b, "c", old, nil)
		publish(t, b, rmsg("t", 1, "x"))
		now.WaitFor(t, 1)
	})
}

// attachLife attaches sub to id with life and fails the test on error.
func attachLife(t *testing.T, b Bridge, id string, sub Subscriber, life Lifetime) *StoredSession {
	t.Helper()
	st, err := b.Attach(context.Background(), id, "", sub, life, nil)
	if err != nil {
		t.Fatalf("Attach(%s, %+v): %v", id, life, err)
	}
	return st
}

// Clean Start and persistence are asked apart (MQTT 5.0, sections 3.1.2.4
// and 3.1.2.11.2): Clean Start discards the stored session
// [MQTT-3.1.2-4], its absence resumes it [MQTT-3.1.2-5], and whether the
// session (new or resumed) outlives the connection is Persistent's alone
// [MQTT-3.1.2-23]. Each case starts from a stored session holding the
// subscription old/# and one queued message.
func TestContract_LifetimeCleanStartAndPersistent_MQTT_3_1_2_4(t *testing.T) {
	cases := []struct {
		name string
		life Lifetime
		// resumed: Attach returns the stored session; kept: a session is
		// stored after the connection ends, with these subscriptions.
		resumed bool
		kept    []string
	}{
		{"clean start, persistent: a new session kept", Lifetime{CleanStart: true, Persistent: true}, false, []string{"new/#"}},
		{"resumed, ends with the connection", Lifetime{Persistent: false}, true, nil},
		{"clean start, ends with the connection (3.1.1 clean)", broker.CleanSession(true), false, nil},
		{"resumed and kept (3.1.1 persistent)", broker.CleanSession(false), true, []string{"new/#", "old/#"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			contract(t, contractOptions{}, func(t *testing.T, b Bridge) {
				s := &sink{}
				attach(t, b, "c", s, false)
				subscribe(t, b, "c", "old/#", 1)
				storeOffline(t, b, "c", s)
				publish(t, b, rmsg("old/q", 1, "queued"))
				fence(t, b, b)

				s = &sink{}
				st := attachLife(t, b, "c", s, tc.life)
				if got := st != nil; got != tc.resumed {
					t.Fatalf("Attach returned %+v, want resumed %v", st, tc.resumed)
				}
				if tc.resumed {
					if got, want := queuedAtQoS(st), []string{"queued@1"}; !slices.Equal(got, want) {
						t.Fatalf("resumed with queued %v, want %v", got, want)
					}
					if _, ok := st.Subscriptions["old/#"]; !ok {
						t.Fatalf("resumed without its subscription: %v", st.Subscriptions)
					}
				}
				subscribe(t, b, "c", "new/#", 1)
				publish(t, b, rmsg("old/live", 1, "live"))
				fence(t, b, b)
				if got := len(s.Deliveries()); tc.resumed != (got == 1) {
					t.Fatalf("live connection got %d messages on old/#, want %d", got, map[bool]int{true: 1}[tc.resumed])
				}
				var state *StoredSession
				if tc.life.Persistent {
					state = &StoredSession{}
				}
				detach(t, b, "c", s, state)

				back := attach(t, b, "c", &sink{}, false)
				if tc.kept == nil {
					if back != nil {
						t.Fatalf("a session that ended with its connection came back: %+v", back)
					}
					return
				}
				var subs []string
				if back != nil {
					for f := range back.Subscriptions {
						subs = append(subs, f)
					}
				}
				slices.Sort(subs)
				if !slices.Equal(subs, tc.kept) {
					t.Fatalf("kept session's subscriptions %v, want %v", subs, tc.kept)
				}
			})
		})
	}
}
