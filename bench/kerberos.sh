#!/usr/bin/env bash
# Runs inside `scripts/lab run`, after bench/ad.sh provisioned svc_awseg.
# Cold path: examples/s4u versus MIT kvno -U alice -P <spn>, each run from a
# fresh copy of the same forwardable TGT ccache (kinit -f), same KDC. Our
# command is built static (CGO_ENABLED=0: no dynamic loader, as Go builds
# for other systems by default), kvno is Debian's.
# Warm path: a Negotiate header from a ticket already held, ours (go test
# -bench: a Cache hit and NegotiateHeader) against MIT's GSS-API
# (bench/gssinit: gss_init_sec_context with SPNEGO from a MEMORY ccache,
# base64), in one run. Also the in-process cold path.
set -euo pipefail
export SEGKCD_SVC_PASSWORD='Bench-Svc-Passw0rd!'
spn="http/mail.${SEGKCD_DOMAIN}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -o "$work/s4u" ./examples/s4u
echo "$SEGKCD_SVC_PASSWORD" | KRB5CCNAME="FILE:$work/tgt.cc" kinit -f svc_awseg >/dev/null
prep="cp $work/tgt.cc $work/run.cc"
hyperfine --warmup 3 --runs 40 -N --export-markdown bench/results/s4u-cold.md \
  --prepare "$prep" -n "segkcd examples/s4u" "$work/s4u -ccache $work/run.cc -impersonate alice -spn $spn" \
  --prepare "$prep" -n "MIT kvno -U -P" "env KRB5CCNAME=FILE:$work/run.cc kvno -q -U alice -P $spn"

gcc -O2 -Wall -o "$work/gssinit" bench/gssinit/gssinit.c -lgssapi_krb5 -lkrb5
"$work/s4u" -ccache "$work/tgt.cc" -impersonate alice -spn "$spn" -out "$work/alice.cc" >/dev/null
{
  echo "# warm path, ns per Negotiate header: MIT gss_init_sec_context (bench/gssinit), 3 runs of 20000"
  for r in 1 2 3; do "$work/gssinit" "FILE:$work/alice.cc" "$spn@$SEGKCD_REALM" 20000; done
  echo "# ours: go test -bench (Cache hit + NegotiateHeader), 3 runs"
  go test ./kerberos -run '^$' -bench 'BenchmarkWarmTicketAndHeader' -benchmem -count 3 | grep '^Benchmark'
} | tee bench/results/warm-vs-mit.txt
go test ./kerberos -run '^$' -bench . -benchmem -count 5 | tee bench/results/kerberos-go-bench.txt
