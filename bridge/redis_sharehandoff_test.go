package bridge

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/bridgemq/server/internal/redistest"
)

// Section 4.8.2 across replicas: a replica that takes a group's handed-off
// messages hands them to its member in order; from the first one no member
// takes, the rest go back to the head of the group's list, in order, for
// the next replica's look, so that none is lost or overtaken.
func TestRedis_Share_HandOffTakesInOrder_ReturnsTheRest_MQTT_4_8_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	const group = "$share/g/t"
	tests := []struct {
		name   string
		accept int
	}{
		{"member takes none", 0},
		{"member takes two then closes", 2},
		{"member takes all", 5},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprint("m", i)
			// The member takes the first accept messages and refuses the
			// rest, as a connection that closes meanwhile does.
			sub := &sink{}
			sub.RefuseAfter(tt.accept)
			attach(t, a, id, sub, true)
			subscribe(t, a, id, group, 1)
			defer detach(t, a, id, sub, nil)
			var envs []string
			for k := range 5 {
				m := rmsg("t", 1, fmt.Sprint(k))
				envs = append(envs, string(AppendEnvelope(nil, m, "")))
			}
			back, fields := a.Redis.takeShared(context.Background(), group, envs)
			if !slices.Equal(back, envs[tt.accept:]) {
				t.Fatalf("returned %d messages, want the %d from the first refused", len(back), len(envs)-tt.accept)
			}
			var got []string
			for _, d := range sub.Deliveries() {
				got = append(got, string(d.Message.Payload))
			}
			if fmt.Sprint(got) != fmt.Sprint([]string{"0", "1", "2", "3", "4"}[:tt.accept]) {
				t.Fatalf("member got %v, want the first %d in order", got, tt.accept)
			}
			// A group no replica has members of: nobody drains its list.
			idle := fmt.Sprintf("$share/idle%d/t", i)
			ctx := context.Background()
			a.Redis.returnShared(ctx, idle, back, fields)
			a.Redis.returnShared(ctx, idle, []string{"earlier"}, nil)
			list := a.Redis.rdb.LRange(ctx, a.Redis.shareQueueKey(idle), 0, -1).Val()
			if want := append([]string{"earlier"}, back...); len(back) > 0 && !slices.Equal(list, want) {
				t.Fatalf("list holds %d entries, want %d with the last returned at the head, each batch in order", len(list), len(want))
			}
			if ttl := a.Redis.rdb.PTTL(ctx, a.Redis.shareQueueKey(idle)).Val(); ttl <= 0 || ttl > shareHandoffTTL {
				t.Fatalf("list TTL %v, want at most %v", ttl, shareHandoffTTL)
			}
		})
	}
}
