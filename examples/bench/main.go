// Command bench is an end-to-end MQTT 3.1.1 load generator, in the manner of
// mqtt-benchmark: P publishers and S subscribers, each side with its own list
// of broker addresses (publishers on replica A and subscribers on replica B,
// or both through a load balancer). It reports what was sent, acknowledged
// and delivered, duplicates, out-of-order and lost messages, throughput,
// publish-to-receive and publish-to-PUBACK latency percentiles and connect
// times.
//
// It must not be the bottleneck, so it speaks MQTT over raw TCP with the
// project's own codec: publishes are encoded into a buffered writer that is
// flushed only when the publisher is about to wait, QoS 1/2 publishers keep a
// window of -inflight unacknowledged messages, and acknowledgements are
// handled by a reader goroutine per connection.
//
//	go run ./examples/bench -h
//	go run ./examples/bench -publishers 10 -subscribers 1 -count 5000 -qos 1
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bridgemq/server/internal/mqttconn"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its outputs made explicit: 0 on success, 2 for a usage
// error, 1 when the run could not be carried out.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := execute(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if err := rep.write(stdout, cfg.JSON); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// execute carries out one run: idle connections, then the workload.
func execute(ctx context.Context, cfg *config, log io.Writer) (*report, error) {
	cpu0 := processCPU()
	var tag [2]byte
	_, _ = rand.Read(tag[:])
	r := &runner{cfg: cfg, log: log, epoch: time.Now(), run: binary.BigEndian.Uint16(tag[:])}
	defer r.closeAll()
	rep := &report{
		Publishers: cfg.Publishers, Subscribers: cfg.Subscribers, QoS: cfg.QoS, Size: cfg.Size,
		Topics: cfg.Topics, WildcardFilters: cfg.WildcardFilters, Rate: cfg.Rate,
	}
	if cfg.Idle > 0 {
		r.openIdle(ctx, rep)
	}
	if cfg.Publishers > 0 {
		if err := r.workload(ctx, rep); err != nil {
			return nil, err
		}
	}
	rep.setConnect(&r.connect)
	if wall := time.Since(r.epoch); wall > 0 {
		rep.ToolCPUPercent = 100 * float64(processCPU()-cpu0) / float64(wall)
	}
	return rep, nil
}

// runner holds one run's connections and shared counters.
type runner struct {
	cfg   *config
	log   io.Writer
	epoch time.Time
	run   uint16

	connect   Histogram
	conns     []*mqttconn.Conn
	delivered atomic.Uint64
}

func (r *runner) closeAll() {
	var wg sync.WaitGroup
	for _, c := range r.conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close() }()
	}
	wg.Wait()
	r.conns = nil
}

// openIdle opens -idle connections that send nothing, announces them on the
// log (a script can measure the broker's memory then) and holds them for
// -idle-hold. They stay open until the run ends.
func (r *runner) openIdle(ctx context.Context, rep *report) {
	cfg := r.cfg
	// Small buffers: the tool's side of 50,000 idle connections would
	// otherwise hold 6 GB.
	opts := mqttconn.Options{Version: cfg.version(), KeepAlive: uint16(cfg.IdleKeepAlive / time.Second), BufSize: 512}
	res, wall := connectEach(cfg.Idle, cfg.IdleConcurrency, &r.connect, func(i int) (*mqttconn.Conn, error) {
		o := opts
		if len(cfg.IdleSources) > 0 {
			o.Local = cfg.IdleSources[i%len(cfg.IdleSources)]
		}
		return mqttconn.Dial(cfg.SubBrokers[i%len(cfg.SubBrokers)], fmt.Sprintf("%s-idle-%d", cfg.IDPrefix, i), cfg.Clean, cfg.ConnectTimeout, o)
	})
	if wall > 0 {
		rep.IdleConnectRate = float64(cfg.Idle) / wall.Seconds()
	}
	failed, err := firstError(res)
	rep.ConnectFailures += failed
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d idle connections failed, first: %v", failed, err))
	}
	for _, x := range res {
		if x.err == nil {
			r.conns = append(r.conns, x.c)
			rep.IdleConnections++
		}
	}
	fmt.Fprintf(r.log, "bench: %d idle connections open, connect p50 %.2fms p99 %.2fms, %.0f/s; holding %v\n",
		rep.IdleConnections, millis(r.connect.Quantile(0.5)), millis(r.connect.Quantile(0.99)), rep.IdleConnectRate, r.cfg.IdleHold)
	select {
	case <-time.After(r.cfg.IdleHold):
	case <-ctx.Done():
	}
}

// workload connects the subscribers then the publishers, publishes, waits
// for the deliveries and fills rep.
func (r *runner) workload(ctx context.Context, rep *report) error {
	cfg := r.cfg
	subRes := connectAll(cfg.Subscribers, cfg.IdleConcurrency, cfg.SubBrokers,
		func(i int) string { return fmt.Sprintf("%s-sub-%d", cfg.IDPrefix, i) }, cfg, cfg.subscriberFilters, &r.connect)
	pubRes := connectAll(cfg.Publishers, cfg.IdleConcurrency, cfg.PubBrokers,
		func(i int) string { return fmt.Sprintf("%s-pub-%d", cfg.IDPrefix, i) }, cfg, nil, &r.connect)
	for _, x := range append(subRes, pubRes...) {
		if x.err == nil {
			r.conns = append(r.conns, x.c)
		}
	}
	failed, err := firstError(append(subRes, pubRes...))
	if err != nil {
		return fmt.Errorf("%d of %d workload connections failed, first: %w", failed, len(subRes)+len(pubRes), err)
	}

	subs := make([]*subscriber, cfg.Subscribers)
	subErrs := make([]error, cfg.Subscribers)
	var readers sync.WaitGroup
	for i, x := range subRes {
		subs[i] = newSubscriber(i, x.c, cfg, r.run, r.epoch, &r.delivered)
		readers.Add(1)
		go func() { defer readers.Done(); subErrs[i] = subs[i].receive() }()
	}
	pubs := make([]*publisher, cfg.Publishers)
	for i, x := range pubRes {
		pubs[i] = newPublisher(i, x.c, cfg, r.run, r.epoch)
		readers.Add(1)
		go func() { defer readers.Done(); pubs[i].readAcks() }()
	}

	start := time.Since(r.epoch)
	stopProgress := r.progress(pubs, start)
	sent, lastPublish, pubErrs := r.publishAll(ctx, pubs)
	expected := sent * uint64(cfg.Subscribers)
	deadline := r.epoch.Add(lastPublish + cfg.Drain)
	// The publishers answer PUBRECs while the deliveries are awaited: a
	// QoS 2 message is acknowledged only once its PUBREL went out.
	var ackWG sync.WaitGroup
	for _, p := range pubs {
		ackWG.Add(1)
		go func() { defer ackWG.Done(); _ = p.awaitAcks(deadline) }()
	}
	r.awaitDeliveries(ctx, expected, deadline)
	ackWG.Wait()
	stopProgress()

	for _, c := range r.conns {
		c.StopReading()
	}
	readers.Wait() // before closeAll: the readers write acknowledgements
	r.closeAll()
	r.fill(rep, pubs, subs, start, lastPublish, expected)
	for _, e := range append(pubErrs, subErrs...) {
		if e != nil {
			rep.Errors = append(rep.Errors, e.Error())
		}
	}
	for _, p := range pubs {
		select {
		case e := <-p.readErr:
			if e != nil {
				rep.Errors = append(rep.Errors, e.Error())
			}
		default:
		}
	}
	return nil
}

// publishAll runs every publisher to the end of its count or of -duration
// and returns the total sent and when the last publisher finished.
func (r *runner) publishAll(ctx context.Context, pubs []*publisher) (uint64, time.Duration, []error) {
	cfg := r.cfg
	count := uint64(cfg.Count)
	if cfg.Duration > 0 {
		count = 1 << 32
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(len(pubs)) / cfg.Rate * float64(time.Second))
	}
	errs := make([]error, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.publish(ctx, count, interval) }()
	}
	wg.Wait()
	last := time.Since(r.epoch)
	var sent uint64
	for _, p := range pubs {
		sent += p.sent.Load()
	}
	return sent, last, errs
}

// awaitDeliveries waits until expected fresh deliveries have arrived, the
// deadline passes or ctx ends. It polls: the end of a run does not need
// better than a millisecond, and the subscribers stay free of signalling.
func (r *runner) awaitDeliveries(ctx context.Context, expected uint64, deadline time.Time) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for r.delivered.Load() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
		<-tick.C
	}
}

// progress prints a line every -progress until the returned func is called.
func (r *runner) progress(pubs []*publisher, start time.Duration) (stop func()) {
	if r.cfg.Progress <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(r.cfg.Progress)
		defer tick.Stop()
		var lastDelivered uint64
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				var sent, acked uint64
				for _, p := range pubs {
					sent += p.sent.Load()
					acked += p.acked.Load()
				}
				d := r.delivered.Load()
				fmt.Fprintf(r.log, "bench: %6.1fs sent %d acked %d delivered %d (%.0f msg/s)\n",
					(time.Since(r.epoch) - start).Seconds(), sent, acked, d,
					float64(d-lastDelivered)/now.Sub(last).Seconds())
				lastDelivered, last = d, now
			}
		}
	}()
	return func() { close(done); <-finished }
}

// fill computes the report from the finished publishers and subscribers.
func (r *runner) fill(rep *report, pubs []*publisher, subs []*subscriber, start, lastPublish time.Duration, expected uint64) {
	var latency, ack Histogram
	for _, p := range pubs {
		rep.Sent += p.sent.Load()
		rep.Acked += p.acked.Load()
		ack.Merge(&p.ackLatency) // the readers have returned
	}
	var lastRecv int64
	for _, s := range subs {
		latency.Merge(&s.latency)
		rep.Delivered += s.seq.Unique()
		rep.Duplicates += s.seq.Duplicates()
		rep.OutOfOrder += s.seq.OutOfOrder()
		rep.Stale += s.stale
		lastRecv = max(lastRecv, s.lastRecv.Load())
	}
	rep.Expected = expected
	if expected > rep.Delivered {
		rep.Lost = expected - rep.Delivered
	}
	rep.PublishSeconds = (lastPublish - start).Seconds()
	if rep.PublishSeconds > 0 {
		rep.PublishRate = float64(rep.Sent) / rep.PublishSeconds
	}
	if span := time.Duration(lastRecv) - start; rep.Delivered > 0 && span > 0 {
		rep.Throughput = float64(rep.Delivered) / span.Seconds()
	}
	rep.setLatency(&latency)
	rep.setAck(&ack)
}
