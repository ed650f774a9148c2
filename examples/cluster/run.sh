#!/usr/bin/env bash
# A local three-replica cluster behind HAProxy, sharing one Redis (or a Redis Cluster),
# all on 127.0.0.1.
#
#   examples/cluster/run.sh                 # Ctrl-C stops everything
#   REDIS=cluster examples/cluster/run.sh   # the same over a six-node Redis Cluster
#
# Needs go, redis-server (+ redis-cli), haproxy and curl. Every port can be overridden:
#   LB_PORT=1883              HAProxy frontend, where MQTT clients connect
#   TLS_PORT=8883             HAProxy's MQTT over TLS frontend (HAProxy ends TLS with a
#                             certificate this script makes with openssl; clients use
#                             --cafile $STATE_DIR/ca.pem); TLS_PORT=off turns it off
#   STATS_PORT=8404           HAProxy stats page (http://127.0.0.1:8404/)
#   REPLICA_PORTS="1884 1885 1886"   each replica's MQTT listener
#   HTTP_PORTS="8081 8082 8083"      each replica's /healthz /readyz /metrics
#   REDIS_PORT=6380           the redis-server this script starts
#   REDIS_URL=redis://host:port  use that Redis instead of starting one
#   REDIS=cluster             start a Redis Cluster instead of one Redis: three masters
#                             with one replica each (six redis-server processes), and
#                             replicas started with -redis-cluster (needs Redis 7)
#   REDIS_CLUSTER_PORTS="7001 7002 7003 7004 7005 7006"   the six nodes' client ports
#   REDIS_CLUSTER_BUS_PORTS="17001 ... 17006"   their cluster bus ports (default: each
#                             client port + 10000, as Redis does)
#   REDIS=off                 replicas without Redis: independent single nodes that
#                             share NOTHING (only to try the load balancer itself)
#   STATE_DIR=/path           where logs and haproxy.cfg go (default: a new temp dir)
set -euo pipefail

LB_PORT=${LB_PORT:-1883}
TLS_PORT=${TLS_PORT:-8883}
STATS_PORT=${STATS_PORT:-8404}
read -r -a REPLICA_PORTS <<<"${REPLICA_PORTS:-1884 1885 1886}"
read -r -a HTTP_PORTS <<<"${HTTP_PORTS:-8081 8082 8083}"
REDIS_PORT=${REDIS_PORT:-6380}
REDIS=${REDIS:-on}
read -r -a REDIS_CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-7001 7002 7003 7004 7005 7006}"
if [[ -n ${REDIS_CLUSTER_BUS_PORTS:-} ]]; then
	read -r -a REDIS_CLUSTER_BUS_PORTS <<<"$REDIS_CLUSTER_BUS_PORTS"
else
	REDIS_CLUSTER_BUS_PORTS=()
	for p in "${REDIS_CLUSTER_PORTS[@]}"; do REDIS_CLUSTER_BUS_PORTS+=($((p + 10000))); done
fi

die() { echo "run.sh: $*" >&2; exit 1; }

[[ ${#REPLICA_PORTS[@]} -eq ${#HTTP_PORTS[@]} ]] ||
	die "REPLICA_PORTS has ${#REPLICA_PORTS[@]} ports but HTTP_PORTS has ${#HTTP_PORTS[@]}"
# start_redis: "one" starts a redis-server, "cluster" six, "" none (REDIS=off or REDIS_URL).
start_redis=""
case $REDIS in
on) [[ -n ${REDIS_URL:-} ]] || start_redis=one ;;
off) ;;
cluster)
	[[ -z ${REDIS_URL:-} ]] || die "REDIS=cluster starts its own Redis Cluster; unset REDIS_URL"
	[[ ${#REDIS_CLUSTER_PORTS[@]} -eq 6 ]] ||
		die "REDIS_CLUSTER_PORTS has ${#REDIS_CLUSTER_PORTS[@]} ports, want 6 (three masters, three replicas)"
	[[ ${#REDIS_CLUSTER_BUS_PORTS[@]} -eq 6 ]] ||
		die "REDIS_CLUSTER_BUS_PORTS has ${#REDIS_CLUSTER_BUS_PORTS[@]} ports, want 6"
	for p in "${REDIS_CLUSTER_BUS_PORTS[@]}"; do
		((p <= 65535)) || die "cluster bus port $p is past 65535: set REDIS_CLUSTER_BUS_PORTS"
	done
	start_redis=cluster
	;;
*) die "REDIS=$REDIS: want on, off or cluster" ;;
esac
for bin in go haproxy curl; do
	command -v "$bin" >/dev/null || die "$bin not found in PATH"
done
if [[ $TLS_PORT != off ]]; then
	command -v openssl >/dev/null || die "openssl not found in PATH (or set TLS_PORT=off)"
fi
if [[ -n $start_redis ]]; then
	for bin in redis-server redis-cli; do
		command -v "$bin" >/dev/null || die "$bin not found in PATH (apt-get install redis-server)"
	done
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$LB_PORT" "$STATS_PORT" "${REPLICA_PORTS[@]}" "${HTTP_PORTS[@]}")
case $start_redis in
one) ports+=("$REDIS_PORT") ;;
cluster) ports+=("${REDIS_CLUSTER_PORTS[@]}" "${REDIS_CLUSTER_BUS_PORTS[@]}") ;;
esac
[[ $TLS_PORT != off ]] && ports+=("$TLS_PORT")
for p in "${ports[@]}"; do
	! port_busy "$p" || die "port $p on 127.0.0.1 is already in use (override it, see the top of $0)"
done

STATE_DIR=${STATE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bridgemq-cluster.XXXXXX")}
mkdir -p "$STATE_DIR"
echo "state (logs, haproxy.cfg): $STATE_DIR"

pids=()
replica_pids=()
redis_pid=()   # the one Redis this script runs, if any
cluster_pids=() # the Redis Cluster's nodes, in REDIS_CLUSTER_PORTS order (REDIS=cluster)
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping..."
	# Replicas first, with SIGTERM, so they drain; then HAProxy and Redis (or the
	# Redis Cluster's nodes).
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "stopped; logs kept in $STATE_DIR"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
echo "building the server from $repo"
(cd "$repo" && go build -o "$STATE_DIR/bridgemq" .)

# wait_for NAME PID CMD...: retry CMD for up to 20s while process PID lives.
wait_for() {
	local name=$1 pid=$2; shift 2
	for _ in $(seq 200); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || die "$name exited at start-up; see $STATE_DIR"
		sleep 0.1
	done
	die "$name did not become ready; see $STATE_DIR"
}

# cluster_ready PORT: the node on PORT reports cluster_state:ok, knows all six nodes
# and sees each master's replica attached, so that a replica's first CLUSTER SLOTS
# gets the whole map (the test suite's internal/redistopo waits for the same).
cluster_ready() {
	local info
	info=$(redis-cli -h 127.0.0.1 -p "$1" cluster info) || return 1
	[[ $info == *cluster_state:ok* ]] || return 1
	[[ $info == *"cluster_known_nodes:${#REDIS_CLUSTER_PORTS[@]}"[!0-9]* ]] || return 1
	[[ $(redis-cli -h 127.0.0.1 -p "$1" cluster nodes | grep -c 'slave ') -eq $((${#REDIS_CLUSTER_PORTS[@]} / 2)) ]]
}

# cluster_synced PORT: the node on PORT is a master, or a replica whose first sync
# with its master is done. Until then it cannot be promoted: a master killed before
# (the first sync waits repl-diskless-sync-delay, 5s) takes its slots down with it.
cluster_synced() {
	local info
	info=$(redis-cli -h 127.0.0.1 -p "$1" info replication) || return 1
	[[ $info == *role:master* || $info == *master_link_status:up* ]]
}

# start_redis_cluster: six cluster-enabled nodes with the test suite's settings
# (internal/redistopo/cluster.go): no persistence, a node timeout of 2s so that a
# dead master's replica is promoted quickly; then joined as three masters with one
# replica each.
start_redis_cluster() {
	local i port addrs=()
	for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
		port=${REDIS_CLUSTER_PORTS[i]}
		# Each node has its own files. A replica writes the RDB of its first sync to
		# disk even with persistence off; a node that finds that RDB or its nodes file
		# from an earlier run in a reused STATE_DIR is not empty, and --cluster create
		# refuses it. Neither holds anything to keep.
		rm -f "$STATE_DIR/nodes-$port.conf" "$STATE_DIR/dump-$port.rdb"
		redis-server --port "$port" --bind 127.0.0.1 --dir "$STATE_DIR" \
			--save "" --appendonly no --dbfilename "dump-$port.rdb" --daemonize no \
			--cluster-enabled yes --cluster-port "${REDIS_CLUSTER_BUS_PORTS[i]}" \
			--cluster-config-file "$STATE_DIR/nodes-$port.conf" --cluster-node-timeout 2000 \
			>"$STATE_DIR/redis-$port.log" 2>&1 &
		cluster_pids+=($!)
		pids+=($!)
		addrs+=("127.0.0.1:$port")
	done
	for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
		port=${REDIS_CLUSTER_PORTS[i]}
		wait_for "redis :$port (log: $STATE_DIR/redis-$port.log)" "${cluster_pids[i]}" \
			redis-cli -h 127.0.0.1 -p "$port" ping
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
		>"$STATE_DIR/redis-cluster-create.log" 2>&1 ||
		die "redis-cli --cluster create failed; see $STATE_DIR/redis-cluster-create.log"
	for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
		wait_for "Redis Cluster (node :${REDIS_CLUSTER_PORTS[i]})" "${cluster_pids[i]}" \
			cluster_ready "${REDIS_CLUSTER_PORTS[i]}"
	done
	redis_args=(-redis-cluster "$(IFS=,; echo "${addrs[*]}")")
}

redis_args=()
if [[ $REDIS == off ]]; then
	echo "WARNING: REDIS=off: the replicas share nothing; a client only sees messages from clients on its own replica" >&2
elif [[ $start_redis == cluster ]]; then
	start_redis_cluster
elif [[ -n ${REDIS_URL:-} ]]; then
	redis_args=(-redis-url "$REDIS_URL")
else
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE_DIR" \
		--save "" --appendonly no --daemonize no >"$STATE_DIR/redis.log" 2>&1 &
	redis_pid=($!)
	pids+=($!)
	wait_for redis "$!" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
	redis_args=(-redis-url "redis://127.0.0.1:$REDIS_PORT")
fi

servers=""
for i in "${!REPLICA_PORTS[@]}"; do
	n=$((i + 1))
	"$STATE_DIR/bridgemq" -node-id "replica$n" \
		-listen "127.0.0.1:${REPLICA_PORTS[i]}" -http "127.0.0.1:${HTTP_PORTS[i]}" \
		"${redis_args[@]}" >"$STATE_DIR/replica$n.log" 2>&1 &
	pids+=($!)
	replica_pids+=($!)
	servers+="    server replica$n 127.0.0.1:${REPLICA_PORTS[i]} check port ${HTTP_PORTS[i]}"$'\n'
done
for i in "${!HTTP_PORTS[@]}"; do
	wait_for "replica$((i + 1)) (log: $STATE_DIR/replica$((i + 1)).log)" "${replica_pids[i]}" \
		curl -fsS "http://127.0.0.1:${HTTP_PORTS[i]}/readyz"
done

# TLS on the load balancer: a throwaway CA and a certificate for 127.0.0.1 and
# localhost. HAProxy ends TLS and forwards plain MQTT to the replicas.
tls_frontend=""
if [[ $TLS_PORT != off ]]; then
	(
		cd "$STATE_DIR"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
			-subj "/CN=bridgemq example CA" -keyout ca.key -out ca.pem
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-subj "/CN=127.0.0.1" -keyout server.key -out server.csr
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
			-extfile server.ext -out server.pem
		cat server.pem server.key >haproxy.pem
	) >"$STATE_DIR/openssl.log" 2>&1 || die "openssl could not make the certificates; see $STATE_DIR/openssl.log"
	tls_frontend="frontend mqtts
    bind 127.0.0.1:$TLS_PORT ssl crt $STATE_DIR/haproxy.pem ssl-min-ver TLSv1.2
    default_backend replicas
"
fi

# Each proxied connection holds two descriptors; leave room for checks and logs.
maxconn=$(( ($(ulimit -n) - 200) / 2 ))
(( maxconn > 100000 )) && maxconn=100000
(( maxconn < 256 )) && die "ulimit -n is $(ulimit -n); raise it (ulimit -n 65536)"

cat >"$STATE_DIR/haproxy.cfg" <<EOF
# Written by examples/cluster/run.sh
global
    maxconn $maxconn
    stats socket $STATE_DIR/haproxy.sock mode 600 level admin

defaults
    mode tcp
    log stdout format raw local0
    option tcplog
    # MQTT connections are long-lived; the clients' keep-alive, not the proxy,
    # decides when one is dead. Keep these above the longest keep-alive in use.
    # A connection refused by a replica that died between two checks is
    # retried on another one.
    retries 2
    option redispatch
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 2s

frontend mqtt
    bind 127.0.0.1:$LB_PORT
    default_backend replicas

$tls_frontend
backend replicas
    balance leastconn
    # A replica that is draining or has lost Redis answers 503 on /readyz
    # and gets no new clients; its connected clients are closed by the replica.
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
$servers
frontend stats
    mode http
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /
    stats refresh 2s
EOF
haproxy -c -q -f "$STATE_DIR/haproxy.cfg" || die "haproxy rejects $STATE_DIR/haproxy.cfg"
haproxy -f "$STATE_DIR/haproxy.cfg" -db >"$STATE_DIR/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
# The stats page, not the MQTT port: a probe there would reach a replica as a bogus client.
wait_for haproxy "$!" curl -fsS "http://127.0.0.1:$STATS_PORT/"

# In a Redis Cluster, say where a master is, for the failover example below, once
# every replica has its master's data and can take over.
redis_line=${redis_args[1]:-none (REDIS=off)}
failover_hint=""
if [[ $start_redis == cluster ]]; then
	for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
		wait_for "Redis Cluster replication (node :${REDIS_CLUSTER_PORTS[i]})" "${cluster_pids[i]}" \
			cluster_synced "${REDIS_CLUSTER_PORTS[i]}"
	done
	redis_line="Redis Cluster, 3 masters + 3 replicas: ${redis_args[1]}"
	for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
		if [[ $(redis-cli -h 127.0.0.1 -p "${REDIS_CLUSTER_PORTS[i]}" role | head -n 1) == master ]]; then
			failover_hint="kill a Redis master (its Redis replica is promoted after cluster-node-timeout,
2s, and the MQTT replicas follow; redis-cli -p ${REDIS_CLUSTER_PORTS[i]} cluster nodes shows the roles):
  kill -KILL ${cluster_pids[i]}    # redis :${REDIS_CLUSTER_PORTS[i]}
"
			break
		fi
	done
fi

cat <<EOF

cluster up: ${#REPLICA_PORTS[@]} replicas behind HAProxy
  MQTT (HAProxy):   127.0.0.1:$LB_PORT
  MQTT over TLS:    ${TLS_PORT/#off/off (TLS_PORT=off)}$([[ $TLS_PORT != off ]] && echo " on 127.0.0.1, CA: $STATE_DIR/ca.pem")
  replicas:         $(for i in "${!REPLICA_PORTS[@]}"; do printf '127.0.0.1:%s (http :%s)  ' "${REPLICA_PORTS[i]}" "${HTTP_PORTS[i]}"; done)
  HAProxy stats:    http://127.0.0.1:$STATS_PORT/
  Redis:            $redis_line

try, in two terminals:
  mosquitto_sub -h 127.0.0.1 -p $LB_PORT -t 'sensors/#' -q 1 -v
  mosquitto_pub -h 127.0.0.1 -p $LB_PORT -t sensors/1/temp -q 1 -m 21.5
$([[ $TLS_PORT != off ]] && echo "  mosquitto_pub -h 127.0.0.1 -p $TLS_PORT --cafile $STATE_DIR/ca.pem -t sensors/1/temp -q 1 -m 22  # over TLS")
or bypass the balancer and talk to one replica each:
  mosquitto_sub -h 127.0.0.1 -p ${REPLICA_PORTS[0]} -t 'sensors/#' -v
  mosquitto_pub -h 127.0.0.1 -p ${REPLICA_PORTS[${#REPLICA_PORTS[@]}-1]} -t sensors/1/temp -m 21.5
drain one replica (it fails /readyz, HAProxy stops sending it clients):
  kill -TERM ${replica_pids[0]}    # replica1
$failover_hint
Ctrl-C stops everything.
EOF

# Stay up until Ctrl-C or until HAProxy or the one Redis dies. A replica may stop (that
# is what the drain example above does): HAProxy takes it out of rotation and the rest
# carry on. So may a Redis Cluster node (the failover example): its replica takes over.
infra_pids=("$haproxy_pid" "${redis_pid[@]}")
declare -A reported=()
# report_exit NAME PID LOG: say once that PID (NAME) has exited.
report_exit() {
	if [[ -z ${reported[$1]:-} ]] && ! kill -0 "$2" 2>/dev/null; then
		echo "$1 exited (log: $3)" >&2
		reported[$1]=1
	fi
}
while :; do
	for pid in "${infra_pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || die "HAProxy or Redis (pid $pid) exited; see the logs in $STATE_DIR"
	done
	for i in "${!replica_pids[@]}"; do
		report_exit "replica$((i + 1))" "${replica_pids[i]}" "$STATE_DIR/replica$((i + 1)).log"
	done
	for i in "${!cluster_pids[@]}"; do
		report_exit "redis :${REDIS_CLUSTER_PORTS[i]}" "${cluster_pids[i]}" "$STATE_DIR/redis-${REDIS_CLUSTER_PORTS[i]}.log"
	done
	sleep 1
done
