package bridge

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// BenchmarkRedisPublishSync measures the publish path through the Redis
// bridge against a real redis-server (skipped without one, failed with
// CI=true) as synchronous MQTT publishers drive it: the local core's
// publish, the envelope, the batcher, the pipeline with its script call,
// and the answer. An op is one
// message. With P publishers each waits for its
// message's answer before the next, as an MQTT client with one message in
// flight waits for its PUBACK; P of them let the batcher put up to P
// messages in one script call. evalsha/op is Redis's script calls per
// message (1/evalsha/op is the mean batch), redis-cmds/op every command
// Redis ran per message (INFO commandstats, which counts the XADD and
// PUBLISH inside the script too). BenchmarkRedisPublish (redis_codec_test.go)
// is the pipelined case: 32 goroutines per CPU and a subscriber.
func BenchmarkRedisPublishSync(b *testing.B) {
	srv := redistest.Start(b)
	for _, bc := range []struct {
		qos        byte
		publishers int
	}{{1, 1}, {1, 10}, {0, 10}, {1, 100}} {
		b.Run("qos"+strconv.Itoa(int(bc.qos))+"/publishers="+strconv.Itoa(bc.publishers), func(b *testing.B) {
			r := newTestRedis(b, srv, "bench")
			admin := newClient(b, srv)
			ctx := context.Background()
			payload := make([]byte, 64)
			// Warm up: scripts loaded, connections dialled.
			for range 10 {
				if err := r.Publish(ctx, &Message{ID: broker.NewID(), Topic: "bench/warm", QoS: bc.qos, Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			admin.ConfigResetStat(ctx)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, bc.publishers)
			b.ReportAllocs()
			b.ResetTimer()
			for p := range bc.publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := "bench/" + strconv.Itoa(p)
					for next.Add(1) <= int64(b.N) {
						m := &Message{ID: broker.NewID(), Topic: topic, QoS: bc.qos, Payload: payload}
						if err := r.Publish(ctx, m); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			calls, all := commandCalls(b, admin.Info(ctx, "commandstats").Val())
			b.ReportMetric(float64(calls["evalsha"])/float64(b.N), "evalsha/op")
			b.ReportMetric(float64(all)/float64(b.N), "redis-cmds/op")
		})
	}
}

// commandCalls reads INFO commandstats: calls per command, and their sum.
func commandCalls(b *testing.B, info string) (map[string]int64, int64) {
	b.Helper()
	calls := map[string]int64{}
	var all int64
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		if err != nil {
			b.Fatalf("commandstats line %q: %v", line, err)
		}
		calls[name] = n
		all += n
	}
	return calls, all
}
