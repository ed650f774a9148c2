// Command subscriber5 prints the MQTT 5.0 messages matching a topic filter, using the
// Eclipse Paho Go client for MQTT 5 (autopaho, which reconnects and subscribes again by
// itself). One line per message: topic, QoS, "retained" when it was, the payload, and the
// message's User Properties and Content Type when it has them.
//
//	go run ./examples/subscriber5 -topic 'sensors/#' -qos 1
//	go run ./examples/subscriber5 -topic 'orders/#' -client-id billing -session-expiry 1h
//
// With -session-expiry above 0 the broker keeps the session (subscriptions and QoS 1/2
// messages that arrive meanwhile) for that long after a disconnection, on any replica.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "subscriber5:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("subscriber5", flag.ContinueOnError)
	broker := fs.String("broker", "mqtt://127.0.0.1:1883", "broker URL: mqtt://, mqtts://, ws:// or wss://")
	topic := fs.String("topic", "#", "topic filter to subscribe to")
	qos := fs.Int("qos", 1, "QoS to ask for: 0, 1 or 2")
	clientID := fs.String("client-id", "", "client id; empty: one is made up")
	expiry := fs.Duration("session-expiry", 0, "how long the broker keeps the session after a disconnection (0: none)")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the first connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*broker)
	if err != nil {
		return fmt.Errorf("-broker %q: %w", *broker, err)
	}
	if *qos < 0 || *qos > 2 {
		return fmt.Errorf("-qos %d: must be 0, 1 or 2", *qos)
	}
	if *clientID == "" {
		*clientID = fmt.Sprintf("subscriber5-%d", os.Getpid())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan string, 64)
	subscribed := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: *expiry == 0,
		SessionExpiryInterval:         uint32(expiry.Seconds()),
		// Subscribing on every connection: after a reconnection to another
		// replica the subscription is made again (a kept session has it).
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			sctx, scancel := context.WithTimeout(ctx, *timeout)
			defer scancel()
			ack, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: *topic, QoS: byte(*qos)}}})
			if err == nil && len(ack.Reasons) > 0 && ack.Reasons[0] >= 0x80 {
				err = fmt.Errorf("subscribe %q refused: reason 0x%02x", *topic, ack.Reasons[0])
			}
			select {
			case subscribed <- err:
			default:
			}
		},
		OnConnectError: func(err error) { fmt.Fprintln(os.Stderr, "subscriber5: connect:", err) },
		ClientConfig: paho.ClientConfig{
			ClientID: *clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				select {
				case lines <- describe(pr.Packet):
				case <-ctx.Done():
				}
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	}()
	wait := time.NewTimer(*timeout)
	defer wait.Stop()
	select {
	case err := <-subscribed:
		if err != nil {
			return err
		}
	case <-wait.C:
		return fmt.Errorf("no connection to %s within %s", *broker, *timeout)
	case <-ctx.Done():
		return nil
	}
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case l := <-lines:
			fmt.Fprintln(out, l)
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// describe is one output line for p.
func describe(p *paho.Publish) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s qos=%d", p.Topic, p.QoS)
	if p.Retain {
		b.WriteString(" retained")
	}
	fmt.Fprintf(&b, " %s", p.Payload)
	if p.Properties != nil {
		if p.Properties.ContentType != "" {
			fmt.Fprintf(&b, " content-type=%s", p.Properties.ContentType)
		}
		for _, up := range p.Properties.User {
			fmt.Fprintf(&b, " %s=%s", up.Key, up.Value)
		}
	}
	return b.String()
}
