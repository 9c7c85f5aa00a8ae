#!/usr/bin/env bash
# One PowerShell script over WinRM with NTLM and sealed messages on plain
# HTTP, run N times in one process: winrs (bench/winrmrun) against
# pywinrm (Debian python3-winrm), taking turns on the same WS-Man test host.
# The host is a model of Windows, so this measures the clients, not Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEGKCD_WINRM_PASSWORD='Bench-WinRM-Passw0rd!'
. bench/winrm-lib.sh
start_host -user 'CORP\Administrator'
rounds bench/results/winrm-ntlm.txt "round segkcd_ms_per_run pywinrm_ms_per_run" \
  '"$work/winrmrun" -addr "$addr" -user "CORP\\Administrator" -n 200 -script "$script"' \
  '/usr/bin/python3 bench/pywinrm_loop.py "$addr" "CORP\\Administrator" 200 "$script"'
