#!/usr/bin/env bash
# Runs inside `scripts/lab run`. Compares checking the provisioned KCD state
#   ours: examples/provision plan (dial, TLS, bind, rootDSE, a Kerberos TGT,
#         then every step read and found unchanged: the ASA, its credential on
#         two servers of the WS-Man test host, 2 SPNs, the service account,
#         its SPN, protocol transition, delegation targets, IIS on each server)
#   peer: the samba-tool commands an administrator runs over LDAP for the AD
#         facts alone (spn list on the ASA and on the service account,
#         delegation show): ours does more
# and Go benchmarks of single operations on an open connection.
set -euo pipefail
export SEGKCD_SVC_PASSWORD='Bench-Svc-Passw0rd!'
export SEGKCD_WINRM_PASSWORD='Bench-WinRM-Passw0rd!'
bin=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$bin"' EXIT
go build -o "$bin/provision" ./examples/provision
go build -o "$bin/wsmanhost" ./internal/testinfra/wsmanhost
"$bin/wsmanhost" -user "$SEGKCD_BIND_USER" -exchange CAS1=2019,CAS2=2016 -addr-file "$bin/addr" >/dev/null &
for _ in $(seq 50); do [ -s "$bin/addr" ] && break; sleep 0.1; done
cat > "$bin/provision.json" <<JSON
{
  "ldap_url": "${SEGKCD_LDAP_URL}", "ca_file": "${SEGKCD_CA_FILE:-}", "server_name": "${SEGKCD_SERVER_NAME:-}",
  "bind_user": "${SEGKCD_BIND_USER//\\/\\\\}", "bind_password": {"env": "SEGKCD_BIND_PASSWORD"}, "krb5_conf": "${KRB5_CONFIG}",
  "asa": "EXCHASA", "mail_hosts": ["mail.${SEGKCD_DOMAIN}"], "servers": [{"name": "CAS1"}, {"name": "CAS2"}],
  "winrm": {"address": "$(cat "$bin/addr")", "password": {"env": "SEGKCD_WINRM_PASSWORD"}, "test_host": true},
  "service_account": "svc_awseg", "service_password": {"env": "SEGKCD_SVC_PASSWORD"}
}
JSON
"$bin/provision" -config "$bin/provision.json" apply >/dev/null   # create everything once
host=${SEGKCD_LDAP_URL#ldaps://}; host=${host%:*}
auth=(-H "ldap://$host" -U "${SEGKCD_BIND_USER}%${SEGKCD_BIND_PASSWORD}")
peer="samba-tool spn list EXCHASA\$ ${auth[*]@Q} >/dev/null && samba-tool spn list svc_awseg ${auth[*]@Q} >/dev/null && samba-tool delegation show svc_awseg ${auth[*]@Q} >/dev/null"
hyperfine --warmup 2 --runs 15 --export-markdown bench/results/provision-check.md \
  -n "segkcd provision plan (all unchanged)" "$bin/provision -config $bin/provision.json plan >/dev/null" \
  -n "samba-tool spn list x2 + delegation show (LDAP)" "$peer"
go test ./ad -run '^$' -bench . -benchmem -count 5 | tee bench/results/ad-go-bench.txt
