#!/usr/bin/env bash
# What one held long poll costs a proxy: bench/heldping for the seg gateway,
# httputil.ReverseProxy and no proxy at all (the phones' and the backend's own
# cost, subtracted from the other two), in one run, each in a fresh process.
# Writes bench/results/heldping.md, and heap profiles to $HELDPING_PROFILES
# (default /tmp): go tool pprof -top -diff_base /tmp/heldping-direct.heap
# /tmp/heldping-seg.heap shows where the proxy's share goes. Loopback only; no
# lab needed (the tickets are made up: the backend does not check them).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${HELDPING_N:-4000}
ulimit -n "$(ulimit -Hn)"
mkdir -p bench/results
out=bench/results/heldping.md
declare -A heap stacks
for p in direct revproxy seg; do
  line=$(go run ./bench/heldping -proxy "$p" -n "$n" -profile "${HELDPING_PROFILES:-/tmp}/heldping-$p.heap" 2>/dev/null | grep 'per held Ping: heap and stacks')
  heap[$p]=$(sed 's/.*heap and stacks \([0-9]*\) B.*/\1/' <<<"$line")
  stacks[$p]=$(sed 's/.*(stacks \([0-9]*\) B).*/\1/' <<<"$line")
done
rp=$(( ${heap[revproxy]} - ${heap[direct]} ))
sg=$(( ${heap[seg]} - ${heap[direct]} ))
{
  echo "# Held long polls: heap and goroutine stacks per held Ping, the proxy's share ($(date -u +%F), $n held Pings of $((n / 10)) users)"
  echo
  echo "| proxy | per held Ping, whole process | of it stacks | the proxy's share | ratio |"
  echo "|---|---|---|---|---|"
  echo "| none (phones and backend) | ${heap[direct]} B | ${stacks[direct]} B | | |"
  echo "| httputil.ReverseProxy | ${heap[revproxy]} B | ${stacks[revproxy]} B | $rp B ($((rp / 1024)) KiB) | 1 |"
  echo "| seg gateway | ${heap[seg]} B | ${stacks[seg]} B | $sg B ($((sg / 1024)) KiB) | $(awk -v a="$sg" -v b="$rp" 'BEGIN{printf "%.2f", a/b}') |"
} > "$out"
cat "$out"
