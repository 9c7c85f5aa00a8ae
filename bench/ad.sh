#!/usr/bin/env bash
# Runs inside `scripts/lab run`. Compares checking the provisioned KCD state
#   ours: examples/provision re-run (dial, TLS, bind, rootDSE, then every step
#         read and found unchanged: 2 computers/users, 3 SPNs with forest-wide
#         duplicate checks, protocol transition, delegation targets)
#   peer: the samba-tool commands an administrator runs over LDAP for the same
#         facts (spn list on the ASA and on the service account, delegation show)
# and Go benchmarks of single operations on an open connection.
set -euo pipefail
export SEGKCD_SVC_PASSWORD='Bench-Svc-Passw0rd!'
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/provision" ./examples/provision
"$bin/provision" >/dev/null            # create everything once
host=${SEGKCD_LDAP_URL#ldaps://}; host=${host%:*}
auth=(-H "ldap://$host" -U "${SEGKCD_BIND_USER}%${SEGKCD_BIND_PASSWORD}")
peer="samba-tool spn list EXCHASA\$ ${auth[*]@Q} >/dev/null && samba-tool spn list svc_awseg ${auth[*]@Q} >/dev/null && samba-tool delegation show svc_awseg ${auth[*]@Q} >/dev/null"
hyperfine --warmup 2 --runs 15 --export-markdown bench/results/provision-check.md \
  -n "segkcd provision (re-run, all unchanged)" "$bin/provision >/dev/null" \
  -n "samba-tool spn list x2 + delegation show (LDAP)" "$peer"
go test ./ad -run '^$' -bench . -benchmem -count 5 | tee bench/results/ad-go-bench.txt
