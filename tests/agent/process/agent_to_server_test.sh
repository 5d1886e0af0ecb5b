#!/usr/bin/env bash
# Real fleetpmu-shim -> real fleetpmu-agent -> real fleetpmu-server (plaintext on loopback, SQLite).
#  1. the agent is killed with SIGKILL mid-stream and restarted;
#  2. the server is stopped for a while: the agent's spool grows, then drains when it returns;
# and in the end the server's database holds every report of the shim exactly once (every
# interval once per vCPU, no duplicates) and the agent's spool is empty.
# Usage: agent_to_server_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -n 15 "$work"/*.log; exit 1; }

base=$((20000 + RANDOM % 20000))
ingest=$base; query=$((base + 1)); server_metrics=$((base + 2)); agent_metrics=$((base + 3))
cat > "$work/server.textproto" <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$work/server.db" }
allow_plaintext: true
CFG
cat > "$work/agent.textproto" <<CFG
host_id: "e2e-host"
shim_socket: "$work/shim.sock"
spool_path: "$work/spool.db"
server_address: "127.0.0.1:$ingest"
allow_plaintext: true
metrics_listen: "127.0.0.1:$agent_metrics"
backoff_min { nanos: 50000000 }
backoff_max { seconds: 1 }
CFG
sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$work/shim.sock\"|" \
    -e 's/  speed: 1/  speed: 5\n  duration { seconds: 40 }/' \
    -e 's/report_interval { seconds: 10 }/report_interval { seconds: 1 }/' \
    "$src/deploy/examples/sim-host.textproto" > "$work/shim.textproto"

wait_for() {  # wait_for <what> <command...>: polls a condition for up to 20 s
  local what=$1; shift
  for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  fail "timed out waiting for $what"
}
metric() { curl -sf "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"({|$)" {print $2}' | head -1; }
spooled() { sqlite3 "$work/spool.db" "SELECT COUNT(*) FROM batches"; }
stored_intervals() { sqlite3 "$work/server.db" "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats"; }
agent_connected() { metric "$agent_metrics" fleetpmu_agent_connected; }
# Conditions re-evaluated on every poll: <probe function> <bound>.
at_least() { local v; v=$("$1" 2>/dev/null) || v=0; [[ -n "$v" && "$v" -ge "$2" ]]; }
equals() { local v; v=$("$1" 2>/dev/null) || v=""; [[ "$v" == "$2" ]]; }
start_server() { "$bin/fleetpmu-server" --config "$work/server.textproto" >> "$work/server.log" 2>&1 & server_pid=$!; pids+=("$server_pid"); wait_for "the server" curl -sf "127.0.0.1:$server_metrics/metrics"; }
start_agent() { rm -f "$work/shim.sock"; "$bin/fleetpmu-agent" --config "$work/agent.textproto" >> "$work/agent.log" 2>&1 & agent_pid=$!; pids+=("$agent_pid"); wait_for "the agent's socket" test -S "$work/shim.sock"; }

start_server
start_agent
"$bin/fleetpmu-shim" --config "$work/shim.textproto" > "$work/shim.log" 2>&1 &
shim_pid=$!; pids+=("$shim_pid")

# 1. SIGKILL the agent once the server has stored some reports; restart it on the same spool.
wait_for "5 stored intervals" at_least stored_intervals 5
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent

# 2. Stop the server: the spool grows; bring it back: the spool drains.
wait_for "the agent to reconnect" equals agent_connected 1
kill -TERM "$server_pid"; wait "$server_pid" || true
wait_for "the spool to grow" at_least spooled 3
grown=$(spooled)
start_server

wait "$shim_pid" || fail "the shim failed"
wait_for "the spool to drain" equals spooled 0
reports=$(grep -o 'stopped after .*: [0-9]* reports' "$work/shim.log" | grep -o '[0-9]* reports' | grep -o '[0-9]*')
vcpus=$(grep -o 'vcpus: [0-9]*' "$work/shim.textproto" | awk '{s += $2} END {print s}')
intervals=$(sqlite3 "$work/server.db" "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats WHERE host_id = 'e2e-host'")
rows=$(sqlite3 "$work/server.db" "SELECT COUNT(*) FROM vcpu_stats WHERE host_id = 'e2e-host'")
dups=$(sqlite3 "$work/server.db" "SELECT COUNT(*) FROM (SELECT 1 FROM vcpu_stats GROUP BY host_id, vm_id, vcpu, start_unix_ns HAVING COUNT(*) > 1)")
echo "shim: $reports reports of $vcpus vCPUs; server: $intervals intervals, $rows vCPU rows, $dups duplicated; spool peaked at $grown batches while the server was down"
[[ "$intervals" == "$reports" ]] || fail "$intervals intervals stored for $reports reports"
[[ "$rows" == $((reports * vcpus)) ]] || fail "$rows vCPU rows, expected $((reports * vcpus))"
[[ "$dups" == 0 ]] || fail "$dups duplicated rows"
grep -q 'all acknowledged' "$work/shim.log" || fail "the shim had unacknowledged reports"
echo PASS
