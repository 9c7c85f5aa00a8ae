#!/usr/bin/env bash
# Runs inside `scripts/lab run`, after bench/ad.sh provisioned svc_awseg.
# Cold path: examples/s4u versus MIT kvno -U alice -P <spn>, each run from a
# fresh copy of the same forwardable TGT ccache (kinit -f), same KDC.
# Warm path and in-process cold path: go test -bench in ./kerberos.
set -euo pipefail
export SEGKCD_SVC_PASSWORD='Bench-Svc-Passw0rd!'
spn="http/mail.${SEGKCD_DOMAIN}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/s4u" ./examples/s4u
echo "$SEGKCD_SVC_PASSWORD" | KRB5CCNAME="FILE:$work/tgt.cc" kinit -f svc_awseg >/dev/null
prep="cp $work/tgt.cc $work/run.cc"
hyperfine --warmup 3 --runs 40 -N --export-markdown bench/results/s4u-cold.md \
  --prepare "$prep" -n "segkcd examples/s4u" "$work/s4u -ccache $work/run.cc -impersonate alice -spn $spn" \
  --prepare "$prep" -n "MIT kvno -U -P" "env KRB5CCNAME=FILE:$work/run.cc kvno -q -U alice -P $spn"
go test ./kerberos -run '^$' -bench . -benchmem -count 5 | tee bench/results/kerberos-go-bench.txt
