package server

import (
	"context"
	"net"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/broker"
)

// $SYS topics: every -sys-interval each replica publishes its own figures
// under Mosquitto's names, as retained QoS 0 messages held and delivered on
// that replica only (broker.Broker.PublishLocal: another replica's clients
// see that one's figures). They never travel through Redis, and a client
// may not publish on $SYS (the session refuses it).

// version is this build's module version, for $SYS/broker/version.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "bridgemq " + bi.Main.Version
	}
	return "bridgemq (devel)"
}

// publishSys publishes this replica's figures once and, with Redis, the
// cluster's totals.
func (s *Server) publishSys(ctx context.Context, started time.Time) {
	now := time.Now()
	st := s.Stats()
	figures := map[string]int64{
		"clients/connected":   st["connections"],
		"messages/received":   st["publish_received"],
		"messages/sent":       st["messages_delivered"],
		"bytes/received":      s.bytesIn.Load(),
		"bytes/sent":          s.bytesOut.Load(),
		"subscriptions/count": st["bridge_subscriptions"],
	}
	pub := func(topic, value string) {
		s.broker.PublishLocal(&broker.Message{ID: broker.NewID(), Topic: topic, Payload: []byte(value), Retain: true, Node: s.cfg.NodeID, Time: now})
	}
	pub("$SYS/broker/version", version())
	pub("$SYS/broker/uptime", strconv.FormatInt(int64(now.Sub(started)/time.Second), 10)+" seconds")
	for k, v := range figures {
		pub("$SYS/broker/"+k, strconv.FormatInt(v, 10))
	}
	pub("$SYS/broker/retained messages/count", strconv.FormatInt(st["bridge_retained_messages"], 10))
	if s.sysCluster == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, max(s.cfg.SysInterval, time.Second))
	defer cancel()
	totals, nodes, err := s.sysCluster.exchange(cctx, figures)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("$SYS cluster totals not published", "err", err)
		}
		return
	}
	for k, v := range totals {
		pub("$SYS/cluster/"+k, strconv.FormatInt(v, 10))
	}
	pub("$SYS/cluster/nodes", strconv.Itoa(nodes))
}

// runSys publishes the $SYS figures at once and then every -sys-interval
// until ctx ends.
func (s *Server) runSys(ctx context.Context) {
	started := time.Now()
	s.publishSys(ctx, started)
	t := time.NewTicker(s.cfg.SysInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.publishSys(ctx, started)
		}
	}
}

// countingConn counts the bytes a connection reads and writes, for
// $SYS/broker/bytes/received and sent.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// NetConn returns the connection c counts, for what the session asks of
// the socket itself (a half-close after a server DISCONNECT).
func (c *countingConn) NetConn() net.Conn { return c.Conn }
