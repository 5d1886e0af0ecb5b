#!/usr/bin/env bash
# Real fleetpmu-shim (sim backend, paced) -> real fleetpmu-agent over a unix socket. The agent is
# killed with SIGKILL mid-stream and restarted on the same spool: in the end the spool must hold
# every report of the shim exactly once (one batch per report, the shim's cursor equal to the
# number of batches), and the shim must have had every report acknowledged.
# Usage: shim_to_agent_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
agent_pid=""
cleanup() {
  [[ -n "$agent_pid" ]] && kill -9 "$agent_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
cat > "$work/agent.textproto" <<CFG
host_id: "process-test"
shim_socket: "$work/shim.sock"
spool_path: "$work/spool.db"
server_address: "127.0.0.1:1"
allow_plaintext: true
metrics_listen: "127.0.0.1:$port"
CFG
sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$work/shim.sock\"|" \
    -e 's/  speed: 1/  speed: 10\n  duration { seconds: 40 }/' \
    -e 's/report_interval { seconds: 10 }/report_interval { seconds: 1 }/' \
    "$src/deploy/examples/sim-host.textproto" > "$work/shim.textproto"

start_agent() {
  "$bin/fleetpmu-agent" --config "$work/agent.textproto" >> "$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 100); do [[ -S "$work/shim.sock" ]] && return 0; sleep 0.05; done
  echo "agent did not create its socket"; cat "$work/agent.log"; exit 1
}
batches() { sqlite3 "$work/spool.db" "SELECT COUNT(*) FROM batches"; }

start_agent
"$bin/fleetpmu-shim" --config "$work/shim.textproto" > "$work/shim.log" 2>&1 &
shim_pid=$!
# Kill the agent once it has taken some reports, then bring it back.
for _ in $(seq 200); do [[ "$(batches 2>/dev/null || echo 0)" -ge 5 ]] && break; sleep 0.05; done
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
before=$(batches)
rm -f "$work/shim.sock"
start_agent
wait "$shim_pid"
shim_rc=$?
kill -TERM "$agent_pid"; wait "$agent_pid"; agent_pid=""

reports=$(grep -o 'stopped after .*: [0-9]* reports' "$work/shim.log" | grep -o '[0-9]* reports' | grep -o '[0-9]*')
count=$(batches)
cursor=$(sqlite3 "$work/spool.db" "SELECT seq FROM shim_cursors")
echo "agent killed with $before batches spooled; shim sent $reports reports; spool has $count batches, cursor $cursor"
status=0
[[ $shim_rc -eq 0 ]] || { echo "FAIL: shim exited $shim_rc"; status=1; }
grep -q 'all acknowledged' "$work/shim.log" || { echo "FAIL: not every report was acknowledged"; status=1; }
[[ "$count" == "$reports" ]] || { echo "FAIL: $count batches for $reports reports"; status=1; }
[[ "$cursor" == "$reports" ]] || { echo "FAIL: shim cursor $cursor, expected $reports"; status=1; }
[[ "$before" -ge 5 && "$before" -lt "$reports" ]] || { echo "FAIL: the kill did not land mid-stream ($before of $reports)"; status=1; }
if [[ $status -ne 0 ]]; then tail -20 "$work/shim.log" "$work/agent.log"; fi
exit $status
