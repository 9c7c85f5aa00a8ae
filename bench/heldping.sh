#!/usr/bin/env bash
# What one held long poll costs a proxy: bench/heldping for the seg gateway,
# httputil.ReverseProxy and no proxy at all (the phones' and the backend's own
# cost, subtracted from the other two), in one run, each in a fresh process,
# for answers that have not begun (quiet: as Exchange holds a Ping) and for
# answers whose first line came at once (begun: a streamed answer, the worst
# case for a proxy). Two figures each: the heap in use (whole spans, with
# what a burst of 4,000 set-ups leaves fragmented) and the live heap (the
# objects a held Ping keeps), both with goroutine stacks.
# Writes bench/results/heldping.md, and heap profiles to $HELDPING_PROFILES
# (default /tmp): go tool pprof -top -diff_base /tmp/heldping-quiet-direct.heap
# /tmp/heldping-quiet-seg.heap shows where the proxy's share goes. Loopback
# only; no lab needed (the tickets are made up: the backend does not check
# them).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${HELDPING_N:-4000}
ulimit -n "$(ulimit -Hn)"
mkdir -p bench/results
out=bench/results/heldping.md
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
kib() { awk -v a="$1" 'BEGIN{printf "%.1f", a/1024}'; }
{
  echo "# Held long polls: memory per held Ping, the proxy's share ($(date -u +%F), $n held Pings of $((n / 10)) users)"
  echo
  echo "\`bash bench/heldping.sh\`: each proxy in a fresh process with the phones and the backend; the"
  echo "proxy's share is the process's figure less the same run with no proxy."
  echo
  echo "| answer | proxy | heap in use and stacks | its share | ratio | live heap and stacks | its share | ratio | goroutines |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$out"
for answer in quiet begun; do
  declare -A heap live gor
  for p in direct revproxy seg; do
    line=$(go run ./bench/heldping -proxy "$p" -n "$n" -answer "$answer" \
      -profile "${HELDPING_PROFILES:-/tmp}/heldping-$answer-$p.heap" 2>/dev/null | grep 'per held Ping: heap and stacks')
    heap[$p]=$(sed 's/.*heap and stacks \([0-9]*\) B (stacks.*/\1/' <<<"$line")
    live[$p]=$(sed 's/.*live heap and stacks \([0-9]*\) B.*/\1/' <<<"$line")
    gor[$p]=$(sed 's/.*goroutines \([0-9.]*\).*/\1/' <<<"$line")
  done
  rph=$(( ${heap[revproxy]} - ${heap[direct]} )); sgh=$(( ${heap[seg]} - ${heap[direct]} ))
  rpl=$(( ${live[revproxy]} - ${live[direct]} )); sgl=$(( ${live[seg]} - ${live[direct]} ))
  {
    echo "| $answer | none (phones and backend) | ${heap[direct]} B | | | ${live[direct]} B | | | ${gor[direct]} |"
    echo "| $answer | httputil.ReverseProxy | ${heap[revproxy]} B | $(kib $rph) KiB | 1 | ${live[revproxy]} B | $(kib $rpl) KiB | 1 | ${gor[revproxy]} |"
    echo "| $answer | seg gateway | ${heap[seg]} B | $(kib $sgh) KiB | $(ratio $sgh $rph) | ${live[seg]} B | $(kib $sgl) KiB | $(ratio $sgl $rpl) | ${gor[seg]} |"
  } >> "$out"
  unset heap live gor
done
cat "$out"
