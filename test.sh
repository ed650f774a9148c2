#!/usr/bin/env bash
# Runs every check the project has, the way CI does: installs what is missing on a fresh
# Debian machine, then gofmt, go vet, staticcheck, the race-enabled test suite and a
# bounded fuzz run of each fuzz target (./packets, ./bridge). Usage: bash ./test.sh
#
# Tests start their own redis-server, redis-sentinel, haproxy, mosquitto and headless chromium on free ports
# (one runs examples/cluster/run.sh, which starts a Redis Cluster and HAProxy itself),
# so a system service the Debian packages may auto-start on 6379/1883 does not matter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Fuzzing budget as a count of executions per target, not a duration: with a duration, Go
# 1.26's fuzz coordinator can report "context deadline exceeded" at the deadline without any
# failing input (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
# 1,000,000 per packet target (six of them since the 5.0 codec) keeps CI's fuzz step near two
# minutes; run longer locally (FUZZEXECS=20000000 bash test.sh, or go test -fuzz) after a codec change.
FUZZEXECS="${FUZZEXECS:-1000000}"
STATICCHECK_VERSION="v0.8.2"
# /usr/sbin holds mosquitto for non-root users; GOPATH/bin holds staticcheck.
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
PATH="$PATH:$(go env GOPATH)/bin"

# step NAME CMD...: runs CMD, prints how long it took, and stops the script if it fails.
step() {
	local name="$1" start rc
	shift
	echo "==> $name"
	start=$(date +%s)
	# The subshell keeps errexit on inside shell functions (a plain call under "set +e"
	# would not), while the step's status is still ours to report.
	set +e
	(
		set -e
		"$@"
	)
	rc=$?
	set -e
	printf '==> %s: %s in %ss\n' "$name" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")" "$(($(date +%s) - start))"
	return "$rc"
}

install_packages() {
	local missing=()
	local cmd
	# curl: examples/cluster/run.sh, which a test runs, polls /readyz with it.
	for cmd in redis-server redis-cli redis-sentinel haproxy curl mosquitto_pub mosquitto_sub mosquitto; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
	done
	local pkgs=()
	if [ "${#missing[@]}" -ne 0 ]; then
		pkgs+=(redis-server redis-tools redis-sentinel haproxy curl mosquitto-clients mosquitto)
	fi
	# The browser test (browser_test.go) runs MQTT.js, fetched with npm, in headless Chromium.
	# Each is installed only when missing: a Node.js from another source already ships its own
	# npm, which Debian's npm package would conflict with.
	for cmd in chromium npm; do
		if ! command -v "$cmd" >/dev/null 2>&1; then
			missing+=("$cmd")
			pkgs+=("$cmd")
		fi
	done
	if [ "${#pkgs[@]}" -eq 0 ]; then
		echo "all of redis-server, redis-cli, redis-sentinel, haproxy, curl, mosquitto(-clients), chromium, npm present; skipping apt"
		return 0
	fi
	echo "missing: ${missing[*]}"
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo)
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
}

check_gofmt() {
	local out
	out=$(gofmt -l .)
	if [ -n "$out" ]; then
		echo "gofmt wants to change:"
		echo "$out"
		return 1
	fi
}

install_staticcheck() {
	if command -v staticcheck >/dev/null 2>&1 && staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
		return 0
	fi
	go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
}

# fuzz_all runs every fuzz target of the packages that have one (the packet decoder and the
# Redis envelope decoder) from their committed seed corpus: FUZZEXECS executions for the packet
# decoders, a fifth of that for the envelope decoder, which runs about five times slower.
fuzz_all() {
	local pkg list targets target execs
	for pkg in ./packets ./bridge; do
		list=$(go test "$pkg" -list 'Fuzz.*')
		targets=$(grep '^Fuzz' <<<"$list" || true)
		if [ -z "$targets" ]; then
			echo "no fuzz targets in $pkg"
			return 1
		fi
		execs=$FUZZEXECS
		[ "$pkg" = ./bridge ] && execs=$((FUZZEXECS / 5))
		for target in $targets; do
			step "fuzz $pkg $target ($execs executions)" go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "${execs}x"
		done
	done
}

total_start=$(date +%s)
step "install system packages" install_packages
step "go mod download" go mod download
step "install staticcheck $STATICCHECK_VERSION" install_staticcheck
step "gofmt" check_gofmt
step "go vet" go vet ./...
step "staticcheck" staticcheck ./...
step "go test -race" go test -race -count=1 -parallel 4 -timeout 12m ./...
# Latency bounds mean little under the race detector (it multiplies the cost of every memory
# access); the tests that assert one run again without it.
step "go test latency bounds (no -race)" go test -count=1 -timeout 5m -run 'TestAbuse_|TestPatternSet_ManyFiltersScale' . ./bridge/pattern
step "fuzz" fuzz_all
echo "==> all checks passed in $(($(date +%s) - total_start))s"
