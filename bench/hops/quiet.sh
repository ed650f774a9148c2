#!/usr/bin/env bash
# quiet.sh [max_wait_s]: returns when the machine's two cores were together <8% busy over 1 s (waits at most max_wait_s)
end=$((SECONDS+${1:-60}))
while :; do
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
  echo "quiet check: $busy% of 200%" >&2
  [ $busy -lt 8 ] && exit 0
  [ $SECONDS -ge $end ] && { echo "not quiet after wait" >&2; exit 1; }
done
