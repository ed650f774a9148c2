#!/usr/bin/env bash
# A local three-replica cluster behind HAProxy, sharing one Redis, all on 127.0.0.1.
#
#   examples/cluster/run.sh          # Ctrl-C stops everything
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

die() { echo "run.sh: $*" >&2; exit 1; }

[[ ${#REPLICA_PORTS[@]} -eq ${#HTTP_PORTS[@]} ]] ||
	die "REPLICA_PORTS has ${#REPLICA_PORTS[@]} ports but HTTP_PORTS has ${#HTTP_PORTS[@]}"
for bin in go haproxy curl; do
	command -v "$bin" >/dev/null || die "$bin not found in PATH"
done
if [[ $TLS_PORT != off ]]; then
	command -v openssl >/dev/null || die "openssl not found in PATH (or set TLS_PORT=off)"
fi
if [[ $REDIS != off && -z ${REDIS_URL:-} ]]; then
	for bin in redis-server redis-cli; do
		command -v "$bin" >/dev/null || die "$bin not found in PATH (apt-get install redis-server)"
	done
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$LB_PORT" "$STATS_PORT" "${REPLICA_PORTS[@]}" "${HTTP_PORTS[@]}")
[[ $REDIS != off && -z ${REDIS_URL:-} ]] && ports+=("$REDIS_PORT")
[[ $TLS_PORT != off ]] && ports+=("$TLS_PORT")
for p in "${ports[@]}"; do
	! port_busy "$p" || die "port $p on 127.0.0.1 is already in use (override it, see the top of $0)"
done

STATE_DIR=${STATE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bridgemq-cluster.XXXXXX")}
mkdir -p "$STATE_DIR"
echo "state (logs, haproxy.cfg): $STATE_DIR"

pids=()
replica_pids=()
redis_pid=() # empty when this script does not run Redis
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping..."
	# Replicas first, with SIGTERM, so they drain; then HAProxy and Redis.
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

redis_args=()
if [[ $REDIS == off ]]; then
	echo "WARNING: REDIS=off: the replicas share nothing; a client only sees messages from clients on its own replica" >&2
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

cat <<EOF

cluster up: ${#REPLICA_PORTS[@]} replicas behind HAProxy
  MQTT (HAProxy):   127.0.0.1:$LB_PORT
  MQTT over TLS:    ${TLS_PORT/#off/off (TLS_PORT=off)}$([[ $TLS_PORT != off ]] && echo " on 127.0.0.1, CA: $STATE_DIR/ca.pem")
  replicas:         $(for i in "${!REPLICA_PORTS[@]}"; do printf '127.0.0.1:%s (http :%s)  ' "${REPLICA_PORTS[i]}" "${HTTP_PORTS[i]}"; done)
  HAProxy stats:    http://127.0.0.1:$STATS_PORT/
  Redis:            ${redis_args[1]:-none (REDIS=off)}

try, in two terminals:
  mosquitto_sub -h 127.0.0.1 -p $LB_PORT -t 'sensors/#' -q 1 -v
  mosquitto_pub -h 127.0.0.1 -p $LB_PORT -t sensors/1/temp -q 1 -m 21.5
$([[ $TLS_PORT != off ]] && echo "  mosquitto_pub -h 127.0.0.1 -p $TLS_PORT --cafile $STATE_DIR/ca.pem -t sensors/1/temp -q 1 -m 22  # over TLS")
or bypass the balancer and talk to one replica each:
  mosquitto_sub -h 127.0.0.1 -p ${REPLICA_PORTS[0]} -t 'sensors/#' -v
  mosquitto_pub -h 127.0.0.1 -p ${REPLICA_PORTS[${#REPLICA_PORTS[@]}-1]} -t sensors/1/temp -m 21.5
drain one replica (it fails /readyz, HAProxy stops sending it clients):
  kill -TERM ${replica_pids[0]}    # replica1

Ctrl-C stops everything.
EOF

# Stay up until Ctrl-C or until HAProxy or Redis dies. A replica may stop (that is what
# the drain example above does): HAProxy takes it out of rotation and the rest carry on.
infra_pids=("$haproxy_pid" "${redis_pid[@]}")
declare -A reported=()
while :; do
	for pid in "${infra_pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || die "HAProxy or Redis (pid $pid) exited; see the logs in $STATE_DIR"
	done
	for i in "${!replica_pids[@]}"; do
		if [[ -z ${reported[$i]:-} ]] && ! kill -0 "${replica_pids[i]}" 2>/dev/null; then
			echo "replica$((i + 1)) exited (log: $STATE_DIR/replica$((i + 1)).log)" >&2
			reported[$i]=1
		fi
	done
	sleep 1
done
