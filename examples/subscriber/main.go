// Command subscriber prints the MQTT messages matching a topic filter, using the Eclipse
// Paho Go client. One line per message: topic, QoS, "retained" when it was, and payload.
//
//	go run ./examples/subscriber -topic 'sensors/+/temp' -qos 1
//	go run ./examples/subscriber -topic 'orders/#' -qos 1 -client-id billing -clean=false
//
// With -clean=false the broker keeps the session (subscriptions and QoS 1/2 messages that
// arrive while the subscriber is away) under its -client-id, on any replica.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "subscriber:", err)
		os.Exit(1)
	}
}

// options are the subscriber's flags.
type options struct {
	broker, topic, clientID, username, password string
	qos, count                                  int
	clean                                       bool
	timeout                                     time.Duration
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("subscriber", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker URL: tcp://host:port, ssl://host:port or ws://host:port/path")
	fs.StringVar(&o.topic, "topic", "bridgemq/#", "topic filter to subscribe to; + and # are wildcards")
	fs.IntVar(&o.qos, "qos", 0, "maximum quality of service asked for: 0, 1 or 2")
	fs.IntVar(&o.count, "count", 0, "exit after this many messages (0 = run until interrupted)")
	fs.StringVar(&o.clientID, "client-id", "", "client identifier (default: subscriber-<pid>)")
	fs.BoolVar(&o.clean, "clean", true, "start a clean session; -clean=false resumes the session of -client-id")
	fs.StringVar(&o.username, "username", "", "user name")
	fs.StringVar(&o.password, "password", "", "password")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the connection and the subscription")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.qos < 0 || o.qos > 2:
		return nil, fmt.Errorf("-qos: %d is not 0, 1 or 2", o.qos)
	case o.count < 0:
		return nil, fmt.Errorf("-count: %d is negative", o.count)
	case o.topic == "":
		return nil, errors.New("-topic: empty")
	}
	if o.clientID == "" {
		if !o.clean {
			return nil, errors.New("-clean=false: needs -client-id, the name the session is kept under")
		}
		o.clientID = "subscriber-" + strconv.Itoa(os.Getpid())
	}
	return &o, nil
}

// run subscribes as the flags in args ask and prints each message to out until ctx ends
// or -count messages have arrived.
func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	messages := make(chan mqtt.Message, 64)
	// Paho calls the handler in order on its own goroutine; handing the message over keeps
	// printing off that goroutine and lets ctx end a blocked hand-over.
	handler := func(_ mqtt.Client, m mqtt.Message) {
		select {
		case messages <- m:
		case <-ctx.Done():
		}
	}
	lost := make(chan error, 1)
	opts := mqtt.NewClientOptions().
		AddBroker(o.broker).
		SetClientID(o.clientID).
		SetCleanSession(o.clean).
		SetUsername(o.username).
		SetPassword(o.password).
		SetConnectTimeout(o.timeout).
		SetAutoReconnect(false).
		SetDefaultPublishHandler(handler). // messages of a resumed session arrive before SUBSCRIBE is answered
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	client := mqtt.NewClient(opts)
	if err := wait(client.Connect(), o.timeout); err != nil {
		return fmt.Errorf("connect to %s: %w", o.broker, err)
	}
	defer client.Disconnect(250)
	if err := wait(client.Subscribe(o.topic, byte(o.qos), handler), o.timeout); err != nil {
		return fmt.Errorf("subscribe to %q: %w", o.topic, err)
	}

	for n := 0; o.count == 0 || n < o.count; n++ {
		select {
		case m := <-messages:
			retained := ""
			if m.Retained() {
				retained = " retained"
			}
			fmt.Fprintf(out, "%s qos=%d%s %s\n", m.Topic(), m.Qos(), retained, m.Payload())
		case err := <-lost:
			return fmt.Errorf("connection lost: %w", err)
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// wait turns a paho token into an error, with a deadline.
func wait(t mqtt.Token, timeout time.Duration) error {
	if !t.WaitTimeout(timeout) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	return t.Error()
}
