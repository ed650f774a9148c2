// rediscost measures what Redis spends, in CPU per message, on four ways of
// writing a message to a stream and announcing it to a subscriber, with
// -batch messages per round trip (the bridge's batches hold about one to
// four at 10,000 msg/s): the bridge's publish script (XADD then PUBLISH in
// Lua, bridge.PublishScriptSource), MULTI/EXEC around XADD and
// PUBLISH, XADD and PUBLISH pipelined without a transaction, and XADD alone
// with the subscriber reading the stream with a blocking XREAD. Redis's CPU
// is INFO cpu's used_cpu_sys + used_cpu_user before and after each variant.
// See bench/README.md ("Where the time goes").
//
//	taskset -c 0 redis-server --port 16999 --save '' &
//	taskset -c 1 go run ./bench/rediscost -addr 127.0.0.1:16999 -rate 10000 -batch 1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
)

func cpu(ctx context.Context, c *redis.Client) float64 {
	s := c.Info(ctx, "cpu").Val()
	var t float64
	for _, l := range strings.Split(s, "\r\n") {
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if strings.HasPrefix(l, k) {
				v, _ := strconv.ParseFloat(strings.TrimPrefix(l, k), 64)
				t += v
			}
		}
	}
	return t
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "redis")
	n := flag.Int("n", 20000, "messages per variant")
	rate := flag.Int("rate", 10000, "messages per second (0: as fast as round trips go)")
	batch := flag.Int("batch", 1, "messages per round trip")
	only := flag.String("only", "", "variant")
	flag.Parse()
	ctx := context.Background()
	pub := redis.NewClient(&redis.Options{Addr: *addr, Protocol: 2})
	adm := redis.NewClient(&redis.Options{Addr: *addr, Protocol: 2})
	sub := redis.NewClient(&redis.Options{Addr: *addr, Protocol: 2})
	env := strings.Repeat("x", 120) // an envelope of a 64-byte message is about this size
	script := redis.NewScript(bridge.PublishScriptSource())
	// fill queues -batch XADDs, each followed by its PUBLISH when announce
	// is set (the stream id is not known yet: a fixed one stands for it).
	fill := func(announce bool) func(redis.Pipeliner) error {
		return func(p redis.Pipeliner) error {
			for range *batch {
				p.XAdd(ctx, &redis.XAddArgs{Stream: "s", MaxLen: 100000, Approx: true, Values: []any{"e", env}})
				if announce {
					p.Publish(ctx, "c", env+"x0000000000000-0")
				}
			}
			return nil
		}
	}
	variants := []string{"script", "multi", "pipeline", "stream"}
	for _, v := range variants {
		if *only != "" && v != *only {
			continue
		}
		adm.Del(ctx, "s")
		got := make(chan int, 1)
		if v == "stream" {
			go func() {
				last, k := "$", 0
				for k < *n {
					res, err := sub.XRead(ctx, &redis.XReadArgs{Streams: []string{"s", last}, Block: 2 * time.Second, Count: 100}).Result()
					if err != nil {
						break
					}
					for _, m := range res[0].Messages {
						last = m.ID
						k++
					}
				}
				got <- k
			}()
			time.Sleep(100 * time.Millisecond)
		} else {
			ps := sub.Subscribe(ctx, "c")
			ps.Receive(ctx)
			go func() {
				k := 0
				ch := ps.Channel()
				t := time.NewTimer(10 * time.Second)
				for k < *n {
					select {
					case <-ch:
						k++
					case <-t.C:
						got <- k
						return
					}
				}
				got <- k
				ps.Close()
			}()
		}
		c0 := cpu(ctx, adm)
		start := time.Now()
		var interval time.Duration
		if *rate > 0 {
			interval = time.Second * time.Duration(*batch) / time.Duration(*rate)
		}
		next := time.Now()
		for i := 0; i < *n; i += *batch {
			if interval > 0 {
				// Spin rather than sleep: a timer's wake-up is coarser
				// than the interval at 10,000 msg/s.
				for time.Now().Before(next) {
					runtime.Gosched()
				}
				next = next.Add(interval)
			}
			var err error
			switch v {
			case "script":
				args := []any{"100000", "0"}
				for j := 0; j < *batch; j++ {
					args = append(args, env, "c")
				}
				err = script.Run(ctx, pub, []string{"s"}, args...).Err()
			case "multi":
				_, err = pub.TxPipelined(ctx, fill(true))
			case "pipeline":
				_, err = pub.Pipelined(ctx, fill(true))
			case "stream":
				_, err = pub.Pipelined(ctx, fill(false))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, v, err)
				os.Exit(1)
			}
		}
		k := <-got
		el := time.Since(start)
		c1 := cpu(ctx, adm)
		fmt.Printf("%-9s batch %d: %6.2f us Redis CPU per message, %d of %d received, %.0f msg/s\n", v, *batch, (c1-c0)*1e6/float64(*n), k, *n, float64(*n)/el.Seconds())
	}
}
