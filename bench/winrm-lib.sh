# Sourced by bench/winrm.sh and bench/winrm-kerberos.sh: builds the WS-Man
# test host and bench/winrmrun into $work, and runs the script in turns,
# ours then the peer, 5 rounds into a results file.
work=$(mktemp -d)
trap 'kill "${hostpid:-}" 2>/dev/null; wait "${hostpid:-}" 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/wsmanhost" ./internal/testinfra/wsmanhost
go build -o "$work/winrmrun" ./bench/winrmrun
script=$'$ErrorActionPreference = \'Stop\'\nGet-LocalGroupMember -Group \'IIS_IUSRS\' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress'

# start_host ARGS...: starts wsmanhost and sets $addr.
start_host() {
  "$work/wsmanhost" -addr-file "$work/addr" "$@" >/dev/null &
  hostpid=$!
  for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
  addr=$(cat "$work/addr")
}

# rounds OUT HEADER OURS PEER: 5 rounds of two commands that each print ms per run.
rounds() {
  echo "$2" | tee "$1"
  for round in 1 2 3 4 5; do
    echo "$round $(eval "$3") $(eval "$4")" | tee -a "$1"
  done
}
