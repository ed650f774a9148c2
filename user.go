package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bridgemq/server/auth"
	"github.com/bridgemq/server/server"
)

const userUsage = `Usage: server user <command> <name> [arguments] [flags]

Manages the users and ACL that replicas started with -auth-redis read from
Redis (mqtt_user:<name>, mqtt_acl:<name>); every replica applies a change
at once.

  add <name> [-superuser]            add a user
  passwd <name>                      change a user's password
  superuser <name> true|false        set or clear the superuser flag
  del <name>                         remove a user and its rules
  acl <name> <filter> <action>       grant publish, subscribe or all on filter
                                     (%u, %c: user name, client id); none removes it
  acl <name>                         list a user's rules

Flags (the Redis ones as the replicas take them, with the same MQTT_*
environment variables; one topology):
  -redis-url url                  one Redis (env MQTT_REDIS_URL)
  -redis-sentinel-master name     Sentinel: the master's name
  -redis-sentinel-addrs h:p,...   Sentinel: the sentinels
  -redis-cluster h:p,...          Redis Cluster: seed nodes
  -redis-username, -redis-password
                                  credentials for Sentinel and Cluster
  -redis-prefix p                 the replicas' -redis-prefix (default "mqtt:")
  -password pw        the password for add and passwd (env MQTT_USER_PASSWORD);
                      without it, the first line of standard input
  -superuser          with add: the user skips every ACL check
`

// runUser is the user subcommand; it returns the exit status: 0 done, 2 a
// usage error, 1 a failure.
func runUser(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("user", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The Redis flags are the server's: parsed, checked and turned into a
	// client by the server's own config, environment included.
	redisFlags := []string{"redis-url", "redis-sentinel-master", "redis-sentinel-addrs",
		"redis-cluster", "redis-username", "redis-password", "redis-prefix"}
	redisArgs := make(map[string]*string, len(redisFlags))
	for _, name := range redisFlags {
		redisArgs[name] = fs.String(name, "", "")
	}
	password := fs.String("password", getenv("MQTT_USER_PASSWORD"), "")
	superuser := fs.Bool("superuser", false, "")
	// Flags may come before, between or after the words.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				_, _ = io.WriteString(stdout, userUsage)
				return 0
			}
			fmt.Fprintf(stderr, "server user: %v (see -h)\n", err)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		words = append(words, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "server user: %s\n\n%s", msg, userUsage)
		return 2
	}
	if len(words) < 2 {
		return usage("need a command and a user name")
	}
	var serverArgs []string
	for _, name := range redisFlags {
		if v := *redisArgs[name]; v != "" {
			serverArgs = append(serverArgs, "-"+name, v)
		}
	}
	cfg, err := server.ParseConfig(serverArgs, getenv)
	if err != nil {
		return usage(err.Error())
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return usage(err.Error())
	}
	if rdb == nil {
		return usage("no Redis: -redis-url, -redis-sentinel-master or -redis-cluster (or their MQTT_* variables) is needed")
	}
	defer rdb.Close()
	admin := &auth.UserAdmin{RDB: rdb, Prefix: cfg.RedisPrefix}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cmd, name, more := words[0], words[1], words[2:]
	readPassword := func() (string, error) {
		if *password != "" {
			return *password, nil
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && (!errors.Is(err, io.EOF) || line == "") {
			return "", fmt.Errorf("no -password and no password on standard input: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("empty password")
		}
		return pw, nil
	}
	switch {
	case cmd == "add" && len(more) == 0:
		pw, perr := readPassword()
		if perr != nil {
			return usage(perr.Error())
		}
		err = admin.AddUser(ctx, name, pw, *superuser)
	case cmd == "passwd" && len(more) == 0:
		pw, perr := readPassword()
		if perr != nil {
			return usage(perr.Error())
		}
		err = admin.SetPassword(ctx, name, pw)
	case cmd == "superuser" && len(more) == 1:
		on, perr := strconv.ParseBool(more[0])
		if perr != nil {
			return usage(fmt.Sprintf("superuser: %q is not true or false", more[0]))
		}
		err = admin.SetSuperuser(ctx, name, on)
	case cmd == "del" && len(more) == 0:
		err = admin.DeleteUser(ctx, name)
	case cmd == "acl" && len(more) == 2:
		err = admin.SetRule(ctx, name, more[0], more[1])
	case cmd == "acl" && len(more) == 0:
		var rules map[string]string
		if rules, err = admin.Rules(ctx, name); err == nil {
			filters := make([]string, 0, len(rules))
			for f := range rules {
				filters = append(filters, f)
			}
			sort.Strings(filters)
			for _, f := range filters {
				fmt.Fprintf(stdout, "%s\t%s\n", rules[f], f)
			}
		}
	default:
		return usage(fmt.Sprintf("%q with %d arguments: unknown command", cmd, len(more)))
	}
	if err != nil {
		fmt.Fprintf(stderr, "server user: %v\n", err)
		if errors.Is(err, auth.ErrSyntax) {
			return 2
		}
		return 1
	}
	return 0
}
