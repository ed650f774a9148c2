// Command server is an MQTT 3.1, 3.1.1 and 5.0 broker whose replicas are stateless and
// scale out behind a TCP load balancer, bridged through Redis. With no
// -redis-url it runs as a single node with nothing else to install.
//
// The server itself lives in package server; this command only turns flags
// and MQTT_* environment variables into a server.Config and runs it. Its
// "user" subcommand manages the users kept in Redis for -auth-redis.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/bridgemq/server/server"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "user" {
		os.Exit(runUser(os.Args[2:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run is main with its inputs made explicit; it returns the exit status:
// 0 after a clean stop, 2 for a configuration error, 1 for a runtime failure.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := server.ParseConfig(args, getenv)
	if errors.Is(err, server.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 2
	}
	log := cfg.NewLogger(stderr)
	server.SetRedisLogger(log.With("component", "go-redis"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(ctx, cfg, log)
	var cerr *server.ConfigError
	if errors.As(err, &cerr) {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				// Reload logs its outcome; a bad file keeps the one in force.
				if err := srv.Reload(); err == nil {
					log.Info("SIGHUP: reloaded")
				}
			}
		}
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("server stopped", "err", err)
		return 1
	}
	return 0
}
