package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// selfDetaching is a live connection that, like a session, detaches from
// its bridge when it is taken over.
func selfDetaching(b Bridge, id string, persistent bool) *sink {
	s := &sink{}
	s.OnTakeOver = func() {
		var st *StoredSession
		if persistent {
			st = &StoredSession{}
		}
		_ = b.Detach(context.Background(), id, s, st)
	}
	return s
}

// Of two CONNECTs with one client id racing on two replicas, exactly one
// stays connected and the other is taken over [MQTT-3.1.4-2].
func TestRedis_RacingConnectsOneOwner_Issue7_7_MQTT_3_1_4_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	rdb := newClient(t, srv)
	for _, persistent := range []bool{false, true} {
		for i := range 150 {
			id := fmt.Sprintf("race-%v-%d", persistent, i)
			sa, sb := selfDetaching(a, id, persistent), selfDetaching(b, id, persistent)
			var wg sync.WaitGroup
			var errA, errB error
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, errA = a.Attach(context.Background(), id, "", sa, broker.CleanSession(!persistent), nil)
			}()
			go func() {
				defer wg.Done()
				_, errB = b.Attach(context.Background(), id, "", sb, broker.CleanSession(!persistent), nil)
			}()
			wg.Wait()
			if errA != nil || errB != nil {
				t.Fatalf("%s: Attach errors a=%v b=%v", id, errA, errB)
			}
			liveA, liveB := sa.TakenOver() == 0, sb.TakenOver() == 0
			if liveA == liveB {
				t.Fatalf("%s: connected on a=%v, on b=%v: want exactly one owner", id, liveA, liveB)
			}
			owner, want := a, "a"
			live := sa
			if liveB {
				owner, want, live = b, "b", sb
			}
			if node := rdb.HGet(context.Background(), "mqtt:client:"+id, "node").Val(); node != want {
				t.Fatalf("%s: client record names node %q, the live connection is on %q", id, node, want)
			}
			detach(t, owner, id, live, nil)
		}
	}
}

// A session belongs to the username that created it: another user's
// CONNECT with that client id is refused and changes nothing.
func TestBridges_SessionOwnedByItsUser_Issue7_2(t *testing.T) {
	srv := redistest.Start(t)
	for _, tc := range []struct {
		name string
		a, b Bridge
	}{
		{"memory", broker.NewMemory(broker.MemoryOptions{}), nil},
		{"redis", newTestRedis(t, srv, "a"), newTestRedis(t, srv, "b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := tc.b
			if other == nil {
				other = tc.a
			}
			ctx := context.Background()
			alice := selfDetaching(tc.a, "dev", true)
			if _, err := tc.a.Attach(ctx, "dev", "alice", alice, broker.CleanSession(false), nil); err != nil {
				t.Fatal(err)
			}
			subscribe(t, tc.a, "dev", "alice/#", 1)
			for _, clean := range []bool{false, true} {
				mallory := &sink{}
				_, err := other.Attach(ctx, "dev", "mallory", mallory, broker.CleanSession(clean), nil)
				if !errors.Is(err, ErrNotOwner) {
					t.Fatalf("mallory (clean=%v) attaching alice's live session: err = %v, want ErrNotOwner", clean, err)
				}
				if alice.TakenOver() > 0 {
					t.Fatalf("mallory (clean=%v) took alice's connection over", clean)
				}
			}
			detach(t, tc.a, "dev", alice, &StoredSession{})
			for _, clean := range []bool{false, true} {
				if _, err := other.Attach(ctx, "dev", "mallory", &sink{}, broker.CleanSession(clean), nil); !errors.Is(err, ErrNotOwner) {
					t.Fatalf("mallory (clean=%v) attaching alice's stored session: err = %v, want ErrNotOwner", clean, err)
				}
			}
			back := &sink{}
			st, err := other.Attach(ctx, "dev", "alice", back, broker.CleanSession(false), nil)
			if err != nil || st == nil || st.Subscriptions["alice/#"] != 1 {
				t.Fatalf("alice resuming her session: %+v, %v", st, err)
			}
			// Once alice ends her session with a clean one, the id is free.
			if err := other.Detach(ctx, "dev", back, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := other.Attach(ctx, "dev", "mallory", &sink{}, broker.CleanSession(true), nil); err != nil {
				t.Fatalf("mallory after alice's session ended: %v", err)
			}
		})
	}
}

// A takeover the old node did not answer is asked again once the id is
// claimed (repeatTakeover): a node that was alive but missed the request
// (its control subscription was being re-established after a Redis
// restart) ends the old connection then, rather than keep it up beside
// the new one.
func TestRedis_RepeatedTakeoverEndsTheConnectionThatMissedIt(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	old := &sink{}
	attach(t, a, "rt", old, true)
	a.Redis.mu.Lock()
	conn := a.Redis.conns["rt"].conn
	a.Redis.mu.Unlock()
	b.Redis.repeatTakeover("a", "rt", conn)
	deadline := time.Now().Add(2 * time.Second)
	for old.TakenOver() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the old connection was not ended by the repeated takeover")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
