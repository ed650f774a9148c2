// Command publisher sends MQTT messages with the Eclipse Paho Go client.
//
//	go run ./examples/publisher -topic sensors/1/temp -qos 1 -count 10 -message 21.5
//
// With -count above 1 each payload is the message followed by its sequence number.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
}

// options are the publisher's flags.
type options struct {
	broker, topic, message, clientID, username, password string
	qos                                                  int
	count                                                int
	retain                                               bool
	interval, timeout                                    time.Duration
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker URL: tcp://host:port, ssl://host:port or ws://host:port/path")
	fs.StringVar(&o.topic, "topic", "bridgemq/example", "topic to publish to")
	fs.IntVar(&o.qos, "qos", 0, "quality of service: 0, 1 or 2")
	fs.IntVar(&o.count, "count", 1, "how many messages to send")
	fs.StringVar(&o.message, "message", "hello", "payload; with -count > 1 the sequence number is appended")
	fs.BoolVar(&o.retain, "retain", false, "ask the broker to retain the message")
	fs.StringVar(&o.clientID, "client-id", "", "client identifier (default: publisher-<pid>)")
	fs.StringVar(&o.username, "username", "", "user name")
	fs.StringVar(&o.password, "password", "", "password")
	fs.DurationVar(&o.interval, "interval", 0, "pause between messages")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the connection and each acknowledgement")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.qos < 0 || o.qos > 2:
		return nil, fmt.Errorf("-qos: %d is not 0, 1 or 2", o.qos)
	case o.count < 1:
		return nil, fmt.Errorf("-count: %d is below 1", o.count)
	case o.topic == "":
		return nil, errors.New("-topic: empty")
	}
	if o.clientID == "" {
		o.clientID = "publisher-" + strconv.Itoa(os.Getpid())
	}
	return &o, nil
}

// run publishes as the flags in args ask, reporting progress to out.
func run(args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	opts := mqtt.NewClientOptions().
		AddBroker(o.broker).
		SetClientID(o.clientID).
		SetUsername(o.username).
		SetPassword(o.password).
		SetConnectTimeout(o.timeout).
		SetAutoReconnect(false)
	client := mqtt.NewClient(opts)
	if err := wait(client.Connect(), o.timeout); err != nil {
		return fmt.Errorf("connect to %s: %w", o.broker, err)
	}
	defer client.Disconnect(250)

	for i := 1; i <= o.count; i++ {
		payload := o.message
		if o.count > 1 {
			payload = fmt.Sprintf("%s %d", o.message, i)
		}
		// For QoS 1 and 2 the token completes when the broker has acknowledged the message
		// (PUBACK, or PUBCOMP after PUBREC/PUBREL).
		if err := wait(client.Publish(o.topic, byte(o.qos), o.retain, payload), o.timeout); err != nil {
			return fmt.Errorf("publish %d to %q: %w", i, o.topic, err)
		}
		if i < o.count && o.interval > 0 {
			time.Sleep(o.interval)
		}
	}
	fmt.Fprintf(out, "published %d message(s) to %q at QoS %d\n", o.count, o.topic, o.qos)
	return nil
}

// wait turns a paho token into an error, with a deadline.
func wait(t mqtt.Token, timeout time.Duration) error {
	if !t.WaitTimeout(timeout) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	return t.Error()
}
