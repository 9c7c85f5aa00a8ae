#!/usr/bin/env bash
# Runs inside `scripts/lab run`. One PowerShell script over WinRM on plain
# HTTP with Kerberos message encryption, N times after one mutual logon:
# psremote (bench/winrmrun -auth kerberos) against MIT krb5's GSS-API
# (python3-gssapi) with pywinrm's SOAP layer, taking turns on the same
# WS-Man test host. The host is a model of Windows: this compares clients.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEGKCD_WINRM_PASSWORD="$SEGKCD_LAB_USER_PASSWORD"   # alice's, a lab fixture
. bench/winrm-lib.sh
spn="HTTP/winrmbench.${SEGKCD_DOMAIN}"
conf="$SEGKCD_LAB_DIR/etc/smb.conf"
samba-tool user create svc_winrmbench 'Bench-Winrm-Passw0rd-0123!' -s "$conf" >/dev/null 2>&1 || true
samba-tool spn add "$spn" svc_winrmbench -s "$conf" >/dev/null 2>&1 || true
samba-tool domain exportkeytab "$work/kt" --principal="$spn" -s "$conf" >/dev/null 2>&1
echo "$SEGKCD_WINRM_PASSWORD" | KRB5CCNAME="FILE:$work/cc" kinit alice >/dev/null
start_host -keytab "$work/kt"
rounds bench/results/winrm-kerberos.txt "round segkcd_ms_per_run mit_gssapi_pywinrm_ms_per_run" \
  '"$work/winrmrun" -addr "$addr" -auth kerberos -user alice -realm "$SEGKCD_REALM" -spn "$spn" -n 200 -script "$script"' \
  'KRB5CCNAME="FILE:$work/cc" /usr/bin/python3 bench/mit_kerberos_loop.py "http://$addr/wsman" "$spn" "$SEGKCD_REALM" 200 "$script"'
