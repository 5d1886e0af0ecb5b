#!/usr/bin/env bash
# A full spool drops the oldest and says so, with real processes: the server is down while a
# sim shim streams ~100 KB reports into an agent whose spool is bounded to 1 MiB, so most
# batches must go. Then:
#  - the spool never exceeds its bound and keeps the newest batches (drop-oldest);
#  - the agent says so: a log line, and fleetpmu_agent_spool_dropped_batches_total;
#  - once the server is back, it stores exactly the kept reports and learns of every dropped
#    batch (telemetry_drops rows and fleetpmu_telemetry_dropped_total{stage="agent_spool"}),
#    including the drops no report was left to carry (a drops-only batch).
# Usage: agent_full_spool_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -n 15 "$work"/*.log; exit 1; }
wait_for() {  # wait_for <what> <command...>: polls a condition for up to 20 s
  local what=$1; shift
  for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  fail "timed out waiting for $what"
}

bound=1048576
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
host_id: "full-host"
shim_socket: "$work/shim.sock"
spool_path: "$work/spool.db"
spool_max_bytes: $bound
server_address: "127.0.0.1:$ingest"
allow_plaintext: true
metrics_listen: "127.0.0.1:$agent_metrics"
backoff_min { nanos: 50000000 }
backoff_max { nanos: 200000000 }
CFG
# 60 one-second reports as fast as the simulation goes (they stay inside the server's 5 minute
# future-skew bound).
sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$work/shim.sock\"|" \
    -e 's/  speed: 1/  speed: 0\n  duration { seconds: 60 }/' \
    -e 's/report_interval { seconds: 10 }/report_interval { seconds: 1 }/' \
    "$src/deploy/examples/sim-host.textproto" > "$work/shim.textproto"

metric() { curl -sf "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"({|$)" {s += $2; n++} END {if (n) print s}'; }
spooled() { sqlite3 "$work/spool.db" "SELECT COUNT(*) FROM batches"; }
spool_empty() { [[ "$(spooled)" == 0 ]]; }

# 1. No server: the shim's reports all go into the spool, which must drop to stay in bound.
"$bin/fleetpmu-agent" --config "$work/agent.textproto" > "$work/agent.log" 2>&1 & agent_pid=$!; pids+=("$agent_pid")
wait_for "the agent's socket" test -S "$work/shim.sock"
"$bin/fleetpmu-shim" --config "$work/shim.textproto" > "$work/shim.log" 2>&1 || fail "the shim failed"
reports=$(grep -o 'stopped after .*: [0-9]* reports' "$work/shim.log" | grep -o '[0-9]* reports' | grep -o '[0-9]*')
grep -q 'all acknowledged by the agent' "$work/shim.log" || fail "the agent did not take every report"

kept=$(spooled)
bytes=$(sqlite3 "$work/spool.db" "SELECT COALESCE(SUM(size), 0) FROM batches")
first_kept=$(sqlite3 "$work/spool.db" "SELECT MIN(seq) FROM batches")
last_kept=$(sqlite3 "$work/spool.db" "SELECT MAX(seq) FROM batches")
dropped=$(metric "$agent_metrics" fleetpmu_agent_spool_dropped_batches_total)
echo "shim: $reports reports; spool: $kept batches ($bytes of $bound bytes), seq $first_kept..$last_kept; agent dropped $dropped"
[[ "$bytes" -le "$bound" ]] || fail "the spool holds $bytes bytes, over its $bound byte bound"
[[ "$kept" -gt 0 && "$dropped" -gt 0 ]] || fail "nothing was dropped: the test needs a spool that overflows"
[[ $((kept + dropped)) == "$reports" ]] || fail "$kept kept + $dropped dropped != $reports reports"
[[ "$last_kept" == "$reports" && "$first_kept" == $((dropped + 1)) ]] \
  || fail "the spool did not keep the newest batches (kept seq $first_kept..$last_kept of $reports)"
grep -q "spool full .* dropped the [0-9]* oldest batches" "$work/agent.log" || fail "the agent did not log its drops"

# 2. The server returns: it stores the kept reports and hears of every drop.
"$bin/fleetpmu-server" --config "$work/server.textproto" > "$work/server.log" 2>&1 & pids+=($!)
wait_for "the spool to drain" spool_empty
server_drops() { sqlite3 "$work/server.db" "SELECT COALESCE(SUM(count), 0) FROM telemetry_drops WHERE source = 'agent'"; }
all_drops_told() { [[ "$(server_drops)" == "$dropped" ]]; }
wait_for "the server to hear of $dropped drops (has $(server_drops))" all_drops_told
intervals=$(sqlite3 "$work/server.db" "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats WHERE host_id = 'full-host'")
exported=$(curl -sf "127.0.0.1:$server_metrics/metrics" \
  | awk '$1 ~ /^fleetpmu_telemetry_dropped_total\{/ && index($1, "stage=\"agent_spool\"") {s += $2} END {print s + 0}')
echo "server: $intervals intervals stored, $(server_drops) drops recorded, /metrics agent_spool drops $exported"
[[ "$intervals" == "$kept" ]] || fail "$intervals intervals stored, the spool kept $kept"
[[ "$exported" == "$dropped" ]] || fail "/metrics says $exported agent_spool drops, the agent dropped $dropped"
echo PASS
