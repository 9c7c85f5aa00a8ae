#!/usr/bin/env bash
# One PowerShell script over WinRM with NTLM and sealed messages on plain
# HTTP, run N times in one process: psremote (bench/winrmrun) against
# pywinrm (Debian python3-winrm), taking turns on the same WS-Man test host.
# The host is a model of Windows, so this measures the clients, not Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEGKCD_WINRM_PASSWORD='Bench-WinRM-Passw0rd!'
work=$(mktemp -d)
trap 'kill "$hostpid" 2>/dev/null; wait "$hostpid" 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/wsmanhost" ./internal/wsmantest/wsmanhost
go build -o "$work/winrmrun" ./bench/winrmrun
"$work/wsmanhost" -user 'CORP\Administrator' -addr-file "$work/addr" >/dev/null &
hostpid=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(cat "$work/addr")
script=$'$ErrorActionPreference = \'Stop\'\nGet-LocalGroupMember -Group \'IIS_IUSRS\' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress'
out=bench/results/winrm-ntlm.txt
echo "round segkcd_ms_per_run pywinrm_ms_per_run" | tee "$out"
for round in 1 2 3 4 5; do
  ours=$("$work/winrmrun" -addr "$addr" -user 'CORP\Administrator' -n 200 -script "$script")
  peer=$(/usr/bin/python3 bench/pywinrm_loop.py "$addr" 'CORP\Administrator' 200 "$script")
  echo "$round $ours $peer" | tee -a "$out"
done
