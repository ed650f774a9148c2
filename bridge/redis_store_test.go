package bridge

import (
	"context"
	"errors"
	"testing"

	"github.com/bridgemq/server/internal/redistest"
)

// refuseWrites makes Redis refuse every write that needs memory, as it does
// at maxmemory with the noeviction policy; the returned func lifts it.
func refuseWrites(t *testing.T, srv *redistest.Server) func() {
	t.Helper()
	rdb := newClient(t, srv)
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(lift)
	return lift
}

func TestRedis_FailedStoreKeepsPreviousSession_Issue7_4(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "keep/#", 1)
	subscribe(t, a, "p", "also/+", 2)
	_, s2 := resume(t, a, "p", s1) // a stored session exists

	lift := refuseWrites(t, srv)
	err := a.Detach(context.Background(), "p", s2, &StoredSession{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Detach while Redis refuses writes = %v, want ErrUnavailable", err)
	}
	lift()

	publish(t, pub, rmsg("keep/x", 1, "after"))
	st := attach(t, a, "p", &sink{}, false)
	if st == nil {
		t.Fatal("stored session lost after a refused store")
	}
	if len(st.Subscriptions) != 2 || st.Subscriptions["keep/#"] != 1 || st.Subscriptions["also/+"] != 2 {
		t.Fatalf("subscriptions after a refused store = %v, want the previous ones whole", st.Subscriptions)
	}
	if q := queuedPayloads(st); len(q) != 1 || q[0] != "after" {
		t.Fatalf("queued = %v, want [after]", q)
	}
}

func TestRedis_RefusedSubscribeNotRouted_Issue7_4(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "old/#", 1)
	lift := refuseWrites(t, srv)
	if err := a.Subscribe(context.Background(), "p", "refused/#", 1); err == nil {
		t.Fatal("Subscribe succeeded while Redis refuses writes")
	}
	lift()

	publish(t, pub, rmsg("refused/x", 1, "must not arrive"))
	publish(t, pub, rmsg("old/x", 1, "marker"))
	s1.WaitFor(t, 1)
	fence(t, pub, a)
	d := s1.Deliveries()
	if len(d) != 1 || string(d[0].Message.Payload) != "marker" {
		var got []string
		for _, x := range d {
			got = append(got, x.Message.Topic)
		}
		t.Fatalf("deliveries = %v, want only old/x: a refused subscription was routed", got)
	}
	st, _ := resume(t, a, "p", s1)
	if _, ok := st.Subscriptions["refused/#"]; ok || len(st.Subscriptions) != 1 {
		t.Fatalf("stored subscriptions = %v, want only old/#", st.Subscriptions)
	}
}
