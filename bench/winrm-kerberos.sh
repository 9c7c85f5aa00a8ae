#!/usr/bin/env bash
# Runs inside `scripts/lab run`. One PowerShell script over WinRM on plain
# HTTP with Kerberos message encryption, N times after one mutual logon:
# psremote (bench/winrmrun -auth kerberos) against MIT krb5's GSS-API
# (python3-gssapi) with pywinrm's SOAP layer, taking turns on the same
# WS-Man test host. The host is a model of Windows: this compares clients.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEGKCD_WINRM_PASSWORD="$SEGKCD_LAB_USER_PASSWORD"   # alice's, a lab fixture
work=$(mktemp -d)
trap 'kill "$hostpid" 2>/dev/null; wait "$hostpid" 2>/dev/null; rm -rf "$work"' EXIT
spn="HTTP/winrmbench.${SEGKCD_DOMAIN}"
conf="$SEGKCD_LAB_DIR/etc/smb.conf"
samba-tool user create svc_winrmbench 'Bench-Winrm-Passw0rd-0123!' -s "$conf" >/dev/null 2>&1 || true
samba-tool spn add "$spn" svc_winrmbench -s "$conf" >/dev/null 2>&1 || true
rm -f "$work/kt"; samba-tool domain exportkeytab "$work/kt" --principal="$spn" -s "$conf" >/dev/null 2>&1
echo "$SEGKCD_WINRM_PASSWORD" | KRB5CCNAME="FILE:$work/cc" kinit alice >/dev/null
go build -o "$work/wsmanhost" ./internal/wsmantest/wsmanhost
go build -o "$work/winrmrun" ./bench/winrmrun
"$work/wsmanhost" -keytab "$work/kt" -addr-file "$work/addr" >/dev/null &
hostpid=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(cat "$work/addr")
script=$'$ErrorActionPreference = \'Stop\'\nGet-LocalGroupMember -Group \'IIS_IUSRS\' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress'
out=bench/results/winrm-kerberos.txt
echo "round segkcd_ms_per_run mit_gssapi_pywinrm_ms_per_run" | tee "$out"
for round in 1 2 3 4 5; do
  ours=$("$work/winrmrun" -addr "$addr" -auth kerberos -user alice -realm "$SEGKCD_REALM" -spn "$spn" -n 200 -script "$script")
  peer=$(KRB5CCNAME="FILE:$work/cc" /usr/bin/python3 bench/mit_kerberos_loop.py "http://$addr/wsman" "$spn" "$SEGKCD_REALM" 200 "$script")
  echo "$round $ours $peer" | tee -a "$out"
done
