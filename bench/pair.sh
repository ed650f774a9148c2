#!/usr/bin/env bash
# pair.sh compares two builds of the server directly, without Mosquitto in
# between: the same load against build A and build B, alternated round by
# round, with each server process's CPU, system calls and allocations per
# message. Ratios to Mosquitto (compare.sh) carry Mosquitto's own spread
# between runs, which on a shared 2-core machine is larger than the 5% a
# change is held to; a direct pair does not.
#
#   bash bench/pair.sh [-rounds N] [-mode single|replicas] OLD_BIN NEW_BIN [load tool flags]
#
# Defaults: 6 rounds, single node, row 1's shape with more messages
# (-publishers 10 -subscribers 1 -count 30000 -size 64 -qos 1). In
# replicas mode the publishers are on replica A and the subscriber on
# replica B, one Redis; every server process is pinned to core 0, the load
# tool to core 1. Build an old server with
#   git worktree add --detach /tmp/old <rev> && (cd /tmp/old && go build -o /tmp/old-server .)
# Needs taskset, curl, python3, and redis-server for replicas.
set -euo pipefail

ROUNDS=6
MODE=single
while [ $# -gt 0 ]; do
	case "$1" in
	-rounds) ROUNDS=$2; shift 2 ;;
	-mode) MODE=$2; shift 2 ;;
	*) break ;;
	esac
done
[ $# -ge 2 ] || { sed -n 2,17p "$0" >&2; exit 2; }
OLD=$1 NEW=$2
shift 2
LOAD=("$@")
[ ${#LOAD[@]} -gt 0 ] || LOAD=(-publishers 10 -subscribers 1 -count 30000 -size 64 -qos 1)
case "$MODE" in single | replicas) ;; *) echo "pair.sh: -mode single or replicas, not $MODE" >&2; exit 2 ;; esac
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { echo "pair.sh: $b is not an executable" >&2; exit 2; }; done
for c in taskset curl python3; do command -v "$c" >/dev/null || { echo "pair.sh: needs $c" >&2; exit 2; }; done
[ "$MODE" = single ] || command -v redis-server >/dev/null || { echo "pair.sh: needs redis-server" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
cd "$(dirname "$0")/.."
go build -o "$WORK/bench" ./examples/bench

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "pair.sh: nothing listens on $1" >&2; return 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
io() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/io"; }
mallocs() { curl -s "127.0.0.1:$1/metrics" | awk '/^go_memstats_mallocs_total/ {printf "%d", $2}'; }

# server BIN NAME [flags]: starts a server on core 0; sets PORT, HPORT, PID.
server() {
	local bin=$1 name=$2
	shift 2
	PORT=$(freeport) HPORT=$(freeport)
	taskset -c 0 "$bin" -listen "127.0.0.1:$PORT" -http "127.0.0.1:$HPORT" -log-level warn \
		-max-queued-messages 100000 -max-subscriptions-per-client 0 "$@" >"$WORK/$name.log" 2>&1 &
	PID=$!
	PIDS+=("$PID")
	waitport "$PORT"
}

# round BIN LABEL: one run; prints "LABEL msg/s cpu_us reads writes allocs" per server process.
round() {
	local bin=$1 label=$2 procs=() hports=() pub sub rpid=""
	if [ "$MODE" = single ]; then
		server "$bin" single
		procs=("$PID") hports=("$HPORT") pub=$PORT sub=$PORT
	else
		local rp
		rp=$(freeport)
		taskset -c 0 redis-server --port "$rp" --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
		rpid=$!
		PIDS+=("$rpid")
		waitport "$rp"
		server "$bin" a -redis-url "redis://127.0.0.1:$rp" -node-id a
		procs+=("$PID") hports+=("$HPORT") pub=$PORT
		server "$bin" b -redis-url "redis://127.0.0.1:$rp" -node-id b
		procs+=("$PID") hports+=("$HPORT") sub=$PORT
	fi
	local c0=() r0=() w0=() m0=() i
	for i in "${!procs[@]}"; do
		c0+=("$(ticks "${procs[$i]}")") r0+=("$(io "${procs[$i]}" syscr)") w0+=("$(io "${procs[$i]}" syscw)") m0+=("$(mallocs "${hports[$i]}")")
	done
	taskset -c 1 "$WORK/bench" -pub-brokers "127.0.0.1:$pub" -sub-brokers "127.0.0.1:$sub" -json "${LOAD[@]}" >"$WORK/out.json" 2>"$WORK/out.log" ||
		{ echo "pair.sh: load tool failed: $(tail -1 "$WORK/out.log")" >&2; exit 1; }
	local sent tput
	read -r sent tput < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["sent"], int(d["throughput"]))' "$WORK/out.json")
	local line="$label $tput"
	for i in "${!procs[@]}"; do
		local c1 r1 w1 m1
		c1=$(ticks "${procs[$i]}") r1=$(io "${procs[$i]}" syscr) w1=$(io "${procs[$i]}" syscw) m1=$(mallocs "${hports[$i]}")
		line+=$(awk -v c=$((c1 - c0[i])) -v r=$((r1 - r0[i])) -v w=$((w1 - w0[i])) -v m=$((m1 - m0[i])) -v n="$sent" -v hz="$(getconf CLK_TCK)" \
			'BEGIN {printf " %.3f %.3f %.3f %.2f", c / hz / n * 1e6, r / n, w / n, m / n}')
	done
	for p in "${procs[@]}" $rpid; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	PIDS=()
	echo "$line"
}

echo "# pair.sh -mode $MODE, $ROUNDS rounds, load: ${LOAD[*]}" >&2
echo "# old=$OLD new=$NEW; per message, per server process: CPU us, read calls, write calls, allocations" >&2
for r in $(seq "$ROUNDS"); do
	round "$OLD" old
	round "$NEW" new
done | tee "$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" "$MODE" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
procs = ["single"] if sys.argv[2] == "single" else ["A", "B"]
def col(label, i): return [float(r[i]) for r in rows if r[0] == label]
def f(x): return "%d" % x if x >= 1000 else "%.3g" % x
def cell(v): return "%s (%s-%s)" % (f(statistics.median(v)), f(min(v)), f(max(v)))
print("| figure (median (min-max) of %d rounds) | old | new | new / old |" % len(col("old", 1)))
print("|---|---|---|---|")
names = [("msg/s", 1)]
for k, p in enumerate(procs):
    base = 2 + 4 * k
    names += [(p + " CPU us/msg", base), (p + " reads/msg", base + 1), (p + " writes/msg", base + 2), (p + " allocs/msg", base + 3)]
for name, i in names:
    o, n = col("old", i), col("new", i)
    print("| %s | %s | %s | %.3f |" % (name, cell(o), cell(n), statistics.median(n) / statistics.median(o)))
if len(procs) > 1:
    o = [sum(float(r[2 + 4 * k]) for k in range(len(procs))) for r in rows if r[0] == "old"]
    n = [sum(float(r[2 + 4 * k]) for k in range(len(procs))) for r in rows if r[0] == "new"]
    print("| A+B CPU us/msg | %s | %s | %.3f |" % (cell(o), cell(n), statistics.median(n) / statistics.median(o)))
EOF
