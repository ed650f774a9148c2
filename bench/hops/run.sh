#!/usr/bin/env bash
# run.sh NAME [pcap=0|1] [mode=pinned|unpinned|redis1|single] [trace=0|1] [dur=8s]
# Starts Redis and replicas A and B as bench/compare.sh does (replicas target),
# runs row 3's load (10 publishers on A, 1 subscriber on B, 10,000 msg/s QoS 1),
# optionally captures the loopback traffic of the three ports for analyze.py,
# and stops everything. Binaries: $HOP_DIR/server and $HOP_DIR/bench
# (go build -o $HOP_DIR/server . && go build -o $HOP_DIR/bench ./examples/bench);
# results in $HOP_DIR/NAME. Needs taskset, tcpdump (pcap=1), ss, python3.
# bench/README.md ("Latency at a fixed 10,000 msg/s across replicas") has the figures.
set -uo pipefail
NAME=$1; PCAP=${2:-0}; MODE=${3:-pinned}; TRACE=${4:-0}; DUR=${5:-8s}
HOP_DIR=${HOP_DIR:-/tmp/hop}
D=$HOP_DIR/$NAME; mkdir -p $D
RP=16379; AP=16401; BP=16402; BH=16412
PIDS=()
cleanup(){ for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; for p in "${PIDS[@]}"; do wait $p 2>/dev/null; done; }
trap cleanup EXIT
case $MODE in
 pinned) SC="taskset -c 0"; RC="taskset -c 0"; LC="taskset -c 1";;
 unpinned) SC=""; RC=""; LC="";;
 redis1) SC="taskset -c 0"; RC="taskset -c 1"; LC="taskset -c 1";;
 single) SC="taskset -c 0"; RC="taskset -c 0"; LC="taskset -c 1";;
esac
wait_port(){ for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
if [ "$MODE" != single ]; then $RC redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >$D/redis.log 2>&1 & PIDS+=($!); RPID=$!
wait_port $RP || { echo redis fail; exit 1; }; RURL=(-redis-url redis://127.0.0.1:$RP); else RURL=(); RPID=$$; fi
$SC $HOP_DIR/server -listen 127.0.0.1:$AP -http "" -log-level warn -max-queued-messages 100000 -max-subscriptions-per-client 0 \
  "${RURL[@]}" -node-id bench-a >$D/a.log 2>&1 & PIDS+=($!); APID=$!
wait_port $AP || { echo A fail; exit 1; }
if [ "$MODE" = single ]; then BPID=$$; SUBP=$AP; else SUBP=$BP
if [ "$TRACE" = 1 ]; then BHTTP=(-http 127.0.0.1:$BH -pprof); else BHTTP=(-http ""); fi
$SC $HOP_DIR/server -listen 127.0.0.1:$BP "${BHTTP[@]}" -log-level warn -max-queued-messages 100000 -max-subscriptions-per-client 0 \
  -redis-url redis://127.0.0.1:$RP -node-id bench-b >$D/b.log 2>&1 & PIDS+=($!); BPID=$!
wait_port $BP || { echo B fail; exit 1; }; fi
echo "redis=$RPID a=$APID b=$BPID" > $D/pids
if [ "$PCAP" = 1 ]; then
  $LC tcpdump -i lo -w $D/x.pcap -s 0 -B 65536 "tcp port $AP or tcp port $BP or tcp port $RP" >$D/tcpdump.log 2>&1 & TPID=$!; PIDS+=($TPID)
  sleep 1
fi
grep "^cpu[01] " /proc/stat > $D/stat0
for p in $APID $BPID $RPID; do awk '{print $14+$15}' /proc/$p/stat; done > $D/cpu0
( sleep 3; ss -tnpi > $D/ss.txt 2>&1 ) & SSP=$!
if [ "$TRACE" = 1 ]; then ( sleep 3; curl -s -o $D/b.trace "http://127.0.0.1:$BH/debug/pprof/trace?seconds=3" ) & CP=$!; fi
T0=$(date +%s.%N)
if [ "${PERF:-0}" = 1 ]; then ( sleep 1; python3 -c "import time;print(time.clock_gettime(time.CLOCK_REALTIME)-time.clock_gettime(time.CLOCK_MONOTONIC))" > $D/rt_minus_mono; taskset -c 1 perf sched record -k monotonic -o $D/perf.data -- sleep 7 > $D/perf.log 2>&1 ) & PP=$!; else PP=$$; fi
timeout 60 $LC $HOP_DIR/bench -pub-brokers 127.0.0.1:$AP -sub-brokers 127.0.0.1:$SUBP -json -id-prefix hop-$NAME \
  -publishers 10 -subscribers 1 -rate 10000 -duration $DUR -size 64 -qos 1 > $D/bench.json 2> $D/bench.log
T1=$(date +%s.%N)
for p in $APID $BPID $RPID; do awk '{print $14+$15}' /proc/$p/stat; done > $D/cpu1
grep "^cpu[01] " /proc/stat > $D/stat1
echo "$T0 $T1" > $D/times
wait $SSP; [ "$PP" != $$ ] && wait $PP; [ "$TRACE" = 1 ] && wait $CP
if [ "$PCAP" = 1 ]; then awk '{print $14+$15}' /proc/$TPID/stat > $D/tcpdump_ticks; kill -INT $TPID; sleep 1; fi
python3 -c "
import json;j=json.load(open('$D/bench.json'))
print('$NAME', {k:j.get(k) for k in ['sent','delivered','lost','throughput','latency_p50_us','latency_p90_us','latency_p99_us','latency_p999_us','latency_max_us','ack_p50_us','ack_p99_us','tool_cpu_pct']})"
paste $D/stat0 $D/stat1 | awk -v t=$(awk '{print $2-$1}' $D/times) '{b0=$2+$3+$4+$7+$8+$9; b1=$13+$14+$15+$18+$19+$20; printf "%s busy %.0f%% steal %.1f%%  ", $1, (b1-b0)/t, ($20-$9)/t} END{print ""}'
paste $D/cpu0 $D/cpu1 | awk -v t=$(awk '{print $2-$1}' $D/times) '{printf "cpu%% %s ", 100*($2-$1)/100/t} END{print " (A B redis)"}'
python3 - "$D" <<'PY'
import json,sys
D=sys.argv[1]
t0,t1=map(float,open(f'{D}/times').read().split()); T=t1-t0
s0=[l.split() for l in open(f'{D}/stat0')]; s1=[l.split() for l in open(f'{D}/stat1')]
busy=sum(sum(int(b[i])-int(a[i]) for i in (1,2,3,6,7,8)) for a,b in zip(s0,s1))/T
ours=sum(int(b)-int(a) for a,b in zip(open(f'{D}/cpu0').read().split(),open(f'{D}/cpu1').read().split()))/T
tool=json.load(open(f'{D}/bench.json')).get('tool_cpu_pct',0)
try: td=int(open(f'{D}/tcpdump_ticks').read())/T
except Exception: td=0
print(f"machine busy {busy:.0f}% (of 200), servers+redis {ours:.0f}%, tool {tool:.0f}%, tcpdump {td:.0f}% -> other {busy-ours-tool-td:.0f}%")
PY
