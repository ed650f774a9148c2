#!/usr/bin/env bash
# compare.sh: the same workloads against Mosquitto, this server as a single
# node, and this server as two replicas bridged through Redis, side by side.
#
#   bench/compare.sh [-reps N] [-only W1,W2,...] [-out FILE] [-keep]
#
# SERVER_BIN=path measures that server binary instead of this tree's (the load
# tool and the rows are still this tree's), to compare two builds.
# -only runs a subset of the workloads, by name: w1q0 w1q1 w1q1w20 w1q1v5 s1 s2 s1h w2 w3
# w4 w4x w5f1 w5f1000 w5f10000 (rows of bench/README.md); e.g. -only s1,s2
# for the synchronous publishers alone, -only w4,w4x for idle connections.
#
# Servers (Mosquitto, the server, its replicas and their Redis) are pinned to
# core 0 and the load tool (examples/bench) to core 1. Repetitions are
# interleaved (rep 1 of every workload on every target, then rep 2, ...) and
# every run starts from freshly started servers; the table holds medians,
# the spread (min-max) over the repetitions and ratios of the medians to
# Mosquitto's. See bench/README.md for what each row measures.
#
# Bounded in time: about 90 s per repetition plus a 15 s headroom check.
# Every process the script starts is stopped on exit, whatever the exit.
set -euo pipefail

REPS=3
ONLY=""
OUT=""
KEEP=0
while [ $# -gt 0 ]; do
	case "$1" in
	-reps) REPS="$2"; shift 2 ;;
	-only) ONLY="$2"; shift 2 ;;
	-out) OUT="$2"; shift 2 ;;
	-keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,21p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
done
case "$REPS" in '' | *[!0-9]* | 0) echo "compare.sh: -reps must be a positive integer" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/bridgemq-compare.XXXXXX)
RESULTS="$WORK/results.tsv" # target workload rep metric value
QUEUE=100000                # per-session queue bound given to both brokers, above any run's backlog
# The server's -max-subscriptions-per-client (default 1000) is lifted, as
# Mosquitto has none: workload 5 holds 10,000 filters on one subscriber.
SERVER_CPU=0
LOAD_CPU=1
PIDS=()

log() { echo "compare: $*" >&2; }

cleanup() {
	local p
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null || true
	done
	if [ "$KEEP" = 1 ]; then log "logs and raw results kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites ---------------------------------------------------------

need_pkg() { # need_pkg command package
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2 from Debian"
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
	else
		sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
	fi
}
need_pkg mosquitto mosquitto
need_pkg redis-server redis-server || log "redis-server unavailable: the replica column will be n/a"
need_pkg taskset util-linux
need_pkg haproxy haproxy || log "haproxy unavailable: the s1h row will be n/a"
# mosquitto's Debian package starts a system instance on 1883; ours use their own ports.

if [ "$(nproc)" -lt 2 ]; then
	log "fewer than 2 cores: servers and load share core 0"
	LOAD_CPU=0
fi
# Row 4x holds 50,000 connections: root may raise the hard limit (with
# CAP_SYS_RESOURCE); otherwise the row holds what the limit allows, each
# process (broker and tool) keeping 1,000 descriptors spare.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
IDLE_MANY=50000
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_MANY + 1000)) ]; then
	IDLE_MANY=$(($(ulimit -n) - 1000))
	log "open files limited to $(ulimit -n): row 4x holds $IDLE_MANY connections, not 50,000"
fi

log "building the server and the load tool"
(cd "$ROOT" && go build -o "$WORK/server" . && go build -o "$WORK/bench" ./examples/bench)
if [ -n "${SERVER_BIN:-}" ]; then
	# Another build of the server (an older commit, say), measured with this
	# tree's load tool and rows.
	[ -x "$SERVER_BIN" ] || { echo "compare.sh: SERVER_BIN=$SERVER_BIN is not an executable" >&2; exit 2; }
	log "server: $SERVER_BIN"
	cp "$SERVER_BIN" "$WORK/server"
fi

# ---- processes -------------------------------------------------------------

# free_port picks a port below the kernel's ephemeral range, so that no
# client socket of a previous run can hold it.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# wait_port PORT PID: true once PORT accepts connections, false if PID dies
# or 5 s pass first.
wait_port() {
	local i
	for i in $(seq 50); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

start() { # start LOGNAME CMD...: run pinned to the server core, sets LAST_PID
	taskset -c "$SERVER_CPU" "${@:2}" >"$WORK/$1.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

stop_all() {
	local p
	for p in "${TARGET_PIDS[@]:-}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	for p in "${TARGET_PIDS[@]:-}"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null || true
	done
	TARGET_PIDS=()
	PIDS=()
}

REPLICAS_FAILED=0
REDIS_PORT=""

# start_target NAME: start_one, tried three times (a port may be taken
# between the check and the bind); a replica that fails once stays failed.
start_target() {
	local i
	for i in 1 2 3; do
		start_one "$1" && return 0
		stop_all
		[ "$1" = replicas ] && return 1
	done
	return 1
}

# start_one NAME: starts it; sets PUB, SUB (addresses), MEM_PID (the process
# the idle connections land on) and TARGET_PIDS. False when it cannot start.
start_one() {
	TARGET_PIDS=()
	REDIS_PORT=""
	local p a b
	case "$1" in
	mosquitto)
		p=$(free_port)
		printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages %s\n' \
			"$p" "$QUEUE" >"$WORK/mosquitto.conf"
		start mosquitto mosquitto -c "$WORK/mosquitto.conf"
		TARGET_PIDS+=("$LAST_PID")
		wait_port "$p" "$LAST_PID" || return 1
		PUB="127.0.0.1:$p" SUB="127.0.0.1:$p" MEM_PID=$LAST_PID
		;;
	single)
		p=$(free_port)
		start single "$WORK/server" -listen "127.0.0.1:$p" -http "" -log-level warn -max-queued-messages "$QUEUE" -max-subscriptions-per-client 0
		TARGET_PIDS+=("$LAST_PID")
		wait_port "$p" "$LAST_PID" || return 1
		PUB="127.0.0.1:$p" SUB="127.0.0.1:$p" MEM_PID=$LAST_PID
		;;
	replicas)
		[ "$REPLICAS_FAILED" = 1 ] && return 1
		command -v redis-server >/dev/null || { REPLICAS_FAILED=1; return 1; }
		REDIS_PORT=$(free_port)
		start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
		TARGET_PIDS+=("$LAST_PID")
		wait_port "$REDIS_PORT" "$LAST_PID" || { REPLICAS_FAILED=1; return 1; }
		a=$(free_port)
		start replica-a "$WORK/server" -listen "127.0.0.1:$a" -http "" -log-level warn -max-queued-messages "$QUEUE" -max-subscriptions-per-client 0 \
			-redis-url "redis://127.0.0.1:$REDIS_PORT" -node-id bench-a
		TARGET_PIDS+=("$LAST_PID")
		wait_port "$a" "$LAST_PID" || { REPLICAS_FAILED=1; return 1; }
		b=$(free_port)
		start replica-b "$WORK/server" -listen "127.0.0.1:$b" -http "" -log-level warn -max-queued-messages "$QUEUE" -max-subscriptions-per-client 0 \
			-redis-url "redis://127.0.0.1:$REDIS_PORT" -node-id bench-b
		TARGET_PIDS+=("$LAST_PID")
		wait_port "$b" "$LAST_PID" || { REPLICAS_FAILED=1; return 1; }
		PUB="127.0.0.1:$a" SUB="127.0.0.1:$b" MEM_PID=$LAST_PID
		if [ "$WL" = s1h ]; then
			# Every client through HAProxy, round robin over both replicas:
			# the subscriber (connected first) on one, the publishers on both.
			p=$(free_port)
			printf 'global\n\tmaxconn 1000\ndefaults\n\tmode tcp\n\ttimeout connect 5s\n\ttimeout client 5m\n\ttimeout server 5m\nlisten mqtt\n\tbind 127.0.0.1:%s\n\tbalance roundrobin\n\tserver a 127.0.0.1:%s\n\tserver b 127.0.0.1:%s\n' \
				"$p" "$a" "$b" >"$WORK/haproxy.cfg"
			start haproxy haproxy -f "$WORK/haproxy.cfg"
			TARGET_PIDS+=("$LAST_PID")
			wait_port "$p" "$LAST_PID" || return 1
			PUB="127.0.0.1:$p" SUB="127.0.0.1:$p"
		fi
		;;
	esac
}

core_ticks() { # core_ticks N: "busy idle" jiffies of core N (busy counts irq and softirq)
	awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
redis_cpu() { # seconds of CPU Redis has used, from INFO cpu
	redis-cli -p "$REDIS_PORT" info cpu 2>/dev/null | tr -d '\r' |
		awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'
}
jget() { sed -n "s/^ *\"$2\": *\([^,]*\),\{0,1\}$/\1/p" "$1" | head -1; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$TARGET" "$WL" "$REP" "$1" "$2" >>"$RESULTS"; }

values() { # values TARGET WL METRIC: one per repetition
	awk -F'\t' -v t="$1" -v w="$2" -v m="$3" '$1 == t && $2 == w && $4 == m && $5 != "" {print $5}' "$RESULTS"
}
spread() { # spread TARGET WL METRIC DECIMALS: "min-max" over the repetitions, empty for fewer than 2
	values "$1" "$2" "$3" | sort -g | awk -v d="$4" '{v[NR] = $1} END {if (NR > 1) printf "%.*f-%.*f", d, v[1], d, v[NR]}'
}

median() { # median TARGET WL METRIC
	awk -F'\t' -v t="$1" -v w="$2" -v m="$3" '$1 == t && $2 == w && $4 == m && $5 != "" {print $5}' "$RESULTS" |
		sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# ---- workloads -------------------------------------------------------------

# run_load ARGS...: runs the load tool on the load core against the current
# target, records its figures, the server's CPU and Redis CPU per message.
run_load() {
	local json="$WORK/$TARGET-$WL-$REP.json" c0 c1 t0 t1 r0 r1 p sent
	c0=0
	for p in "${TARGET_PIDS[@]}"; do c0=$((c0 + $(cpu_ticks "$p"))); done
	[ -n "$REDIS_PORT" ] && r0=$(redis_cpu)
	t0=$(date +%s.%N)
	if ! timeout 120 taskset -c "$LOAD_CPU" "$WORK/bench" -pub-brokers "$PUB" -sub-brokers "$SUB" -json \
		-id-prefix "$TARGET-$WL-$REP" "$@" >"$json" 2>"$json.log"; then
		log "$TARGET $WL rep $REP: load tool failed: $(tail -1 "$json.log")"
		record error 1
		return 1
	fi
	t1=$(date +%s.%N)
	c1=0
	for p in "${TARGET_PIDS[@]}"; do c1=$((c1 + $(cpu_ticks "$p"))); done
	for k in sent acked delivered expected lost duplicates throughput latency_p50_us latency_p90_us \
		latency_p99_us latency_p999_us latency_max_us ack_p50_us ack_p99_us ack_mean_us \
		connect_p50_ms connect_p99_ms tool_cpu_pct; do
		record "$k" "$(jget "$json" "$k")"
	done
	record server_cpu_pct "$(awk -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
		'BEGIN {printf "%.1f", 100 * c / hz / (t1 - t0)}')"
	if [ -n "$REDIS_PORT" ]; then
		r1=$(redis_cpu)
		sent=$(jget "$json" sent)
		record redis_us_per_msg "$(awk -v a="$r0" -v b="$r1" -v n="$sent" 'BEGIN {if (n > 0) printf "%.2f", (b - a) * 1e6 / n}')"
	fi
	log "$TARGET $WL rep $REP: $(jget "$json" throughput | cut -d. -f1) msg/s, lost $(jget "$json" lost), p99 $(jget "$json" latency_p99_us) us, ack p99 $(jget "$json" ack_p99_us) us"
}

# run_idle N [SOURCES]: opens N idle connections (on the subscriber side,
# keep-alive 60 s, from the local IPs SOURCES when given) and records the
# server's RSS growth per connection, read while the tool holds them, and
# the connections opened per second.
run_idle() {
	local n=$1 json="$WORK/$TARGET-$WL-$REP.json" before after i
	sleep 0.5
	before=$(rss_kb "$MEM_PID")
	timeout 180 taskset -c "$LOAD_CPU" "$WORK/bench" -pub-brokers "$SUB" -publishers 0 -subscribers 0 \
		-idle "$n" -idle-hold 3s -idle-keep-alive 60s -idle-sources "${2:-}" -connect-timeout 30s \
		-json -id-prefix "$TARGET-$WL-$REP" >"$json" 2>"$json.log" &
	local tool=$!
	PIDS+=("$tool")
	for i in $(seq 1200); do
		grep -q "idle connections open" "$json.log" 2>/dev/null && break
		kill -0 "$tool" 2>/dev/null || break
		sleep 0.1
	done
	sleep 1 # let the server settle the new sessions
	after=$(rss_kb "$MEM_PID")
	wait "$tool" || { log "$TARGET $WL rep $REP: load tool failed: $(tail -1 "$json.log")"; record error 1; return 1; }
	record idle_connections "$(jget "$json" idle_connections)"
	record connect_p50_ms "$(jget "$json" connect_p50_ms)"
	record connect_p99_ms "$(jget "$json" connect_p99_ms)"
	record connect_per_s "$(jget "$json" idle_connect_per_s)"
	record rss_kb_per_conn "$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {printf "%.2f", (b - a) / n}')"
	log "$TARGET $WL rep $REP: $n idle, RSS $before -> $after kB"
}

ALL_WORKLOADS="w1q0 w1q1 w1q1w20 w1q1v5 s1 s2 s1h w2 w3 w4 w4x w5f1 w5f1000 w5f10000"
WORKLOADS=$ALL_WORKLOADS
if [ -n "$ONLY" ]; then
	WORKLOADS=""
	for w in ${ONLY//,/ }; do
		case " $ALL_WORKLOADS " in *" $w "*) WORKLOADS="$WORKLOADS $w" ;; *) echo "compare.sh: -only: unknown workload $w (one of: $ALL_WORKLOADS)" >&2; exit 2 ;; esac
	done
fi
run_workload() {
	case "$WL" in
	w1q0) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 0 ;;
	w1q1) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 ;;
	# The same over MQTT 5.0, and over 3.1.1 with the same window: a 5.0
	# client keeps to the server's Receive Maximum, 20 by default on all
	# three targets, where a 3.1.1 one may keep -inflight 100.
	w1q1w20) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 -inflight 20 ;;
	w1q1v5) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 -inflight 20 -protocol 5 ;;
	s1) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 -inflight 1 ;;
	s2) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 2 -inflight 1 ;;
	s1h) # replicas only, behind HAProxy; compared with Mosquitto's s1
		[ "$TARGET" = replicas ] || return 0
		command -v haproxy >/dev/null || return 0
		run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 -inflight 1 ;;
	w2) run_load -publishers 1 -subscribers 100 -count 2000 -size 64 -qos 0 ;;
	w3) run_load -publishers 10 -subscribers 1 -rate 10000 -duration 10s -size 64 -qos 1 ;;
	w4) run_idle 5000 ;;
	w4x) run_idle "$IDLE_MANY" 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8 ;; # spread over source IPs: one reaches one port ~28,000 times, TIME_WAIT of earlier runs included
	w5f*) run_load -publishers 10 -subscribers 1 -count 5000 -size 64 -qos 1 -topics many \
		-wildcard-filters "$(( ${WL#w5f} - 1 ))" -connect-timeout 60s ;;
	esac
}

TARGETS="mosquitto single replicas"
: >"$RESULTS"
for REP in $(seq "$REPS"); do
	for WL in $WORKLOADS; do
		for TARGET in $TARGETS; do
			if ! start_target "$TARGET"; then
				log "$TARGET failed to start (see $WORK/*.log)"
				[ "$TARGET" = replicas ] && { record failed_to_start 1; REPLICAS_FAILED=1; }
				stop_all
				continue
			fi
			run_workload || true
			stop_all
		done
	done
done

# ---- headroom: the load tool must not be the bottleneck -------------------

# Mosquitto on the server core, the tool on the load core, QoS 0, 10
# publishers -> 1 subscriber as fast as possible for 10 s: Mosquitto's CPU
# should be near 100% of its core and the tool's below.
headroom() {
	TARGET=mosquitto WL=headroom REP=1
	start_target mosquitto || { log "headroom: mosquitto failed to start"; return; }
	local b0 b1
	b0=$(core_ticks "$SERVER_CPU")
	run_load -publishers 10 -subscribers 1 -duration 10s -size 64 -qos 0 -drain 2s || true
	b1=$(core_ticks "$SERVER_CPU")
	stop_all
	HEADROOM_CORE=$(awk -v a="$b0" -v b="$b1" 'BEGIN {split(a, x, " "); split(b, y, " ");
		busy = y[1] - x[1]; idle = y[2] - x[2]; if (busy + idle > 0) printf "%.0f", 100 * busy / (busy + idle)}')
	HEADROOM_BROKER=$(median mosquitto headroom server_cpu_pct)
	HEADROOM_TOOL=$(median mosquitto headroom tool_cpu_pct)
}
headroom

# ---- table -----------------------------------------------------------------

fmt() { # fmt VALUE DECIMALS
	[ -z "$1" ] && { echo "-"; return; }
	awk -v v="$1" -v d="$2" 'BEGIN {printf "%.*f", d, v}'
}
ratio() { # ratio VALUE BASE
	{ [ -z "$1" ] || [ -z "$2" ]; } && { echo "-"; return; }
	awk -v v="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2fx", v / b}'
}
# rep_ratios TARGET WL METRIC: "min-max" of the target's figure over
# Mosquitto's in the same repetition (the two ran a minute apart at most),
# empty for fewer than 2 repetitions.
rep_ratios() {
	awk -F'\t' -v t="$1" -v w="$2" -v m="$3" '$2 == w && $4 == m && $5 != "" && ($1 == t || $1 == "mosquitto") {v[$1, $3] = $5; reps[$3] = 1}
		END {n = 0; for (r in reps) if ((t, r) in v && ("mosquitto", r) in v && v["mosquitto", r] != 0) {
			x = v[t, r] / v["mosquitto", r]; if (n == 0 || x < lo) lo = x; if (n == 0 || x > hi) hi = x; n++}
		if (n > 1) printf "%.2f-%.2f", lo, hi}' "$RESULTS"
}
ratio_cell() { # ratio_cell TARGET WL METRIC MEDIAN MOSQUITTO_MEDIAN
	local r sp
	r=$(ratio "$4" "$5")
	sp=$(rep_ratios "$1" "$2" "$3")
	if [ -n "$sp" ] && [ "$r" != - ]; then echo "$r ($sp)"; else echo "$r"; fi
}
cell() { # cell TARGET WL METRIC DECIMALS: median, with the loss when there was one
	local v lost exp sp
	if [ "$1" = replicas ] && grep -q $'^replicas\t.*\tfailed_to_start\t' "$RESULTS"; then
		echo "n/a (replica failed to start)"
		return
	fi
	v=$(median "$1" "$2" "$3")
	[ -z "$v" ] && { echo "n/a"; return; }
	printf '%s' "$(fmt "$v" "$4")"
	sp=$(spread "$1" "$2" "$3" "$4")
	[ -n "$sp" ] && printf ' (%s)' "$sp"
	if [ "$3" = throughput ]; then
		lost=$(median "$1" "$2" lost)
		exp=$(median "$1" "$2" expected)
		if [ -n "$lost" ] && [ "$(fmt "$lost" 0)" != 0 ]; then
			printf ' (%s%% lost)' "$(awk -v l="$lost" -v e="$exp" 'BEGIN {printf "%.1f", (e > 0 ? 100 * l / e : 0)}')"
		fi
	fi
	echo
}
row() { # row LABEL WL METRIC DECIMALS: skipped when the workload did not run
	local m s r
	case " $WORKLOADS " in *" $2 "*) ;; *) return 0 ;; esac
	m=$(median mosquitto "$2" "$3")
	s=$(median single "$2" "$3")
	r=$(median replicas "$2" "$3")
	if grep -q $'^replicas\t.*\tfailed_to_start\t' "$RESULTS"; then r=""; fi
	printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(cell mosquitto "$2" "$3" "$4")" \
		"$(cell single "$2" "$3" "$4")" "$(ratio_cell single "$2" "$3" "$s" "$m")" \
		"$(cell replicas "$2" "$3" "$4")" "$(ratio_cell replicas "$2" "$3" "$r" "$m")"
}
# row_haproxy LABEL METRIC DECIMALS: the replicas' s1h figure beside
# Mosquitto's s1 (HAProxy has no meaning for the other targets).
row_haproxy() {
	local m r
	case " $WORKLOADS " in *" s1h "*) ;; *) return 0 ;; esac
	m=$(median mosquitto s1 "$2")
	r=$(median replicas s1h "$2")
	printf '| %s | %s | - | - | %s | %s |\n' "$1" "$(cell mosquitto s1 "$2" "$3")" \
		"$(cell replicas s1h "$2" "$3")" "$(ratio "$r" "$m")"
}
table() {
	echo "| workload (median (min-max) of $REPS) | Mosquitto | single node | ratio | 2 replicas + Redis | ratio |"
	echo "|---|---|---|---|---|---|"
	row "1. 10 pub x 5,000 -> 1 sub, 64 B, QoS 0: msg/s" w1q0 throughput 0
	row "1. 10 pub x 5,000 -> 1 sub, 64 B, QoS 1: msg/s" w1q1 throughput 0
	row "1w. ... QoS 1, window 20 (5.0's Receive Maximum), MQTT 3.1.1: msg/s" w1q1w20 throughput 0
	row "1w. ... QoS 1, window 20, MQTT 5.0: msg/s" w1q1v5 throughput 0
	row "1s. 10 synchronous pub (-inflight 1) x 5,000 -> 1 sub, QoS 1: msg/s" s1 throughput 0
	row "1s. ... QoS 1: publish-to-PUBACK p50 us" s1 ack_p50_us 0
	row "1s. ... QoS 1: publish-to-PUBACK p99 us" s1 ack_p99_us 0
	row "1s. ... QoS 1: publish-to-PUBACK mean us" s1 ack_mean_us 0
	row_haproxy "1s. ... QoS 1, every client through HAProxy over both replicas: msg/s" throughput 0
	row_haproxy "1s. ... QoS 1, through HAProxy: publish-to-PUBACK p99 us" ack_p99_us 0
	row "1s. 10 synchronous pub (-inflight 1) x 5,000 -> 1 sub, QoS 2: msg/s" s2 throughput 0
	row "1s. ... QoS 2: publish-to-PUBCOMP p50 us" s2 ack_p50_us 0
	row "1s. ... QoS 2: publish-to-PUBCOMP p99 us" s2 ack_p99_us 0
	row "1s. ... QoS 2: publish-to-PUBCOMP mean us" s2 ack_mean_us 0
	row "2. 1 pub x 2,000 -> 100 subs, QoS 0: deliveries/s" w2 throughput 0
	row "3. 10,000 msg/s QoS 1, 10 s: p50 us" w3 latency_p50_us 0
	row "3. 10,000 msg/s QoS 1, 10 s: p99 us" w3 latency_p99_us 0
	row "3. 10,000 msg/s QoS 1, 10 s: p99.9 us" w3 latency_p999_us 0
	row "3. 10,000 msg/s QoS 1, 10 s: max us" w3 latency_max_us 0
	row "4. 5,000 idle connections: connect p50 ms" w4 connect_p50_ms 2
	row "4. 5,000 idle connections: connect p99 ms" w4 connect_p99_ms 2
	row "4. 5,000 idle connections: connects/s" w4 connect_per_s 0
	row "4. 5,000 idle connections: RSS KB per connection" w4 rss_kb_per_conn 2
	row "4x. $IDLE_MANY idle connections: connect p99 ms" w4x connect_p99_ms 2
	row "4x. $IDLE_MANY idle connections: connects/s" w4x connect_per_s 0
	row "4x. $IDLE_MANY idle connections: RSS KB per connection" w4x rss_kb_per_conn 2
	row "5. QoS 1, topics bench/+/data, 1 wildcard filter: msg/s" w5f1 throughput 0
	row "5. ... + 999 idle wildcard filters (1,000): msg/s" w5f1000 throughput 0
	row "5. ... + 9,999 idle wildcard filters (10,000): msg/s" w5f10000 throughput 0
	row "server CPU % during workload 1, QoS 0" w1q0 server_cpu_pct 0
	echo
	local t w base
	case " $WORKLOADS " in *" w5f1 "*)
		echo "Workload 5, throughput with N filters / with 1 filter:"
		echo
		for t in $TARGETS; do
			base=$(median "$t" w5f1 throughput)
			printf -- '- %s: 1,000 filters %s, 10,000 filters %s\n' "$t" \
				"$(ratio "$(median "$t" w5f1000 throughput)" "$base")" "$(ratio "$(median "$t" w5f10000 throughput)" "$base")"
		done
		echo
		;;
	esac
	printf 'Load-tool headroom (Mosquitto pinned to core %s, tool to core %s, QoS 0, 10 pub -> 1 sub, max rate, 10 s): Mosquitto %s%% CPU (core %s %s%% busy), tool %s%% CPU\n' \
		"$SERVER_CPU" "$LOAD_CPU" "$(fmt "${HEADROOM_BROKER:-}" 0)" "$SERVER_CPU" "${HEADROOM_CORE:--}" "$(fmt "${HEADROOM_TOOL:-}" 0)"
	if ! grep -q $'^replicas\t.*\tfailed_to_start\t' "$RESULTS"; then
		echo
		echo "Redis CPU per published message (replicas, INFO cpu used_cpu_sys+used_cpu_user):"
		echo
		for w in w1q0 w1q1 w1q1w20 w1q1v5 s1 s2 w3 w5f1 w5f1000 w5f10000; do
			case " $WORKLOADS " in *" $w "*) ;; *) continue ;; esac
			printf -- '- %s: %s us/msg\n' "$w" "$(fmt "$(median replicas "$w" redis_us_per_msg)" 2)"
		done
	fi
}

table | if [ -n "$OUT" ]; then tee "$OUT"; else cat; fi
[ "$KEEP" = 1 ] && cp "$RESULTS" "$WORK/results-final.tsv"
exit 0
