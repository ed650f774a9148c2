// Command publisher5 publishes MQTT 5.0 messages with the Eclipse Paho Go client for
// MQTT 5 (autopaho), with the properties 5.0 adds: User Properties, a Content Type and a
// Message Expiry Interval, which reach 5.0 subscribers on every replica unchanged.
//
//	go run ./examples/publisher5 -topic sensors/1/temp -message 21.5 -qos 1
//	go run ./examples/publisher5 -topic alerts -message hot -user source=probe-7 -expiry 60s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "publisher5:", err)
		os.Exit(1)
	}
}

// userProps collects repeated -user name=value flags.
type userProps []paho.UserProperty

func (u *userProps) String() string { return fmt.Sprint(*u) }

func (u *userProps) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not name=value", v)
	}
	*u = append(*u, paho.UserProperty{Key: name, Value: value})
	return nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publisher5", flag.ContinueOnError)
	broker := fs.String("broker", "mqtt://127.0.0.1:1883", "broker URL: mqtt://, mqtts://, ws:// or wss://")
	topic := fs.String("topic", "", "topic to publish to (required)")
	message := fs.String("message", "", "payload")
	qos := fs.Int("qos", 1, "QoS: 0, 1 or 2")
	retain := fs.Bool("retain", false, "publish as the topic's retained message")
	count := fs.Int("count", 1, "how many times to publish it")
	contentType := fs.String("content-type", "", "Content Type property")
	expiry := fs.Duration("expiry", 0, "Message Expiry Interval (0: none)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the connection")
	var users userProps
	fs.Var(&users, "user", "User Property name=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *topic == "" {
		return errors.New("-topic is required")
	}
	if *qos < 0 || *qos > 2 {
		return fmt.Errorf("-qos %d: must be 0, 1 or 2", *qos)
	}
	u, err := url.Parse(*broker)
	if err != nil {
		return fmt.Errorf("-broker %q: %w", *broker, err)
	}
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		OnConnectError:                func(err error) { fmt.Fprintln(os.Stderr, "publisher5: connect:", err) },
		ClientConfig:                  paho.ClientConfig{ClientID: fmt.Sprintf("publisher5-%d", os.Getpid())},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	}()
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := cm.AwaitConnection(cctx); err != nil {
		return fmt.Errorf("no connection to %s: %w", *broker, err)
	}
	props := &paho.PublishProperties{ContentType: *contentType, User: paho.UserProperties(users)}
	if *expiry > 0 {
		secs := uint32(expiry.Seconds())
		props.MessageExpiry = &secs
	}
	for range *count {
		p := &paho.Publish{Topic: *topic, QoS: byte(*qos), Retain: *retain, Payload: []byte(*message), Properties: props}
		res, err := cm.Publish(cctx, p)
		if err != nil {
			return fmt.Errorf("publish %q: %w", *topic, err)
		}
		if res != nil && res.ReasonCode >= 0x80 {
			return fmt.Errorf("publish %q refused: reason 0x%02x", *topic, res.ReasonCode)
		}
	}
	return nil
}
