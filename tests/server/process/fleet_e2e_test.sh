#!/usr/bin/env bash
# Issue 6 end to end, with real processes on loopback: sim shim (3 tenants, initech on seed-v5)
# -> agent -> server (SQLite, bearer tokens) and fleetpmuctl:
#  - fleetpmuctl shows, per pCPU, the ownership the simulation produced (the pCPUs each tenant's
#    vCPUs ran on, from the shim's own summary);
#  - /metrics shows lost overflows for initech and none for acme and globex;
#  - a tenant token cannot see another tenant;
#  - a malformed batch (counter index >= N) is rejected and the next good one stored.
# Usage: fleet_e2e_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -n 12 "$work"/*.log 2>/dev/null; exit 1; }
wait_for() { local what=$1; shift; for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; fail "timed out waiting for $what"; }

base=$((20000 + RANDOM % 20000))
ingest=$base; query=$((base + 1)); server_metrics=$((base + 2)); agent_metrics=$((base + 3))
echo "admin-secret-token" > "$work/admin.token"
echo "acme-secret-token" > "$work/acme.token"
{ "$bin/fleetpmuctl" hash-token --role admin < "$work/admin.token"
  "$bin/fleetpmuctl" hash-token --role tenant:acme < "$work/acme.token"; } > "$work/tokens"
cat > "$work/server.textproto" <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$work/server.db" }
allow_plaintext: true
tokens_file: "$work/tokens"
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
    -e 's/  speed: 1/  speed: 0\n  duration { seconds: 20 }/' \
    -e 's/report_interval { seconds: 10 }/report_interval { seconds: 2 }/' \
    "$src/deploy/examples/sim-host-seed-v5.textproto" > "$work/shim.textproto"
ctl() { "$bin/fleetpmuctl" --server "127.0.0.1:$query" --plaintext "$@"; }
spooled() { sqlite3 "$work/spool.db" "SELECT COUNT(*) FROM batches"; }
spool_empty() { [[ "$(spooled)" == 0 ]]; }

"$bin/fleetpmu-server" --config "$work/server.textproto" > "$work/server.log" 2>&1 & pids+=($!)
wait_for "the server" curl -sf "127.0.0.1:$server_metrics/metrics"
"$bin/fleetpmu-agent" --config "$work/agent.textproto" > "$work/agent.log" 2>&1 & agent_pid=$!; pids+=("$agent_pid")
wait_for "the agent" test -S "$work/shim.sock"
"$bin/fleetpmu-shim" --config "$work/shim.textproto" --summary_file="$work/summary.json" > "$work/shim.log" 2>&1 \
  || fail "the shim failed"
wait_for "the spool to drain" spool_empty

# 1. Ownership as the server reports it against the pCPUs the shim says each tenant ran on.
python3 - "$work" "$bin/fleetpmuctl" "127.0.0.1:$query" <<'PY' || fail "ownership differs from the simulation"
import json, subprocess, sys
work, ctl, server = sys.argv[1:4]
summary = json.load(open(f"{work}/summary.json"))
for t in summary["tenants"]:
    out = subprocess.run([ctl, "--server", server, "--plaintext", "--token_file", f"{work}/admin.token",
                          "ownership", "--tenant", t["tenant"], "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"fleetpmuctl ownership --tenant {t['tenant']}: {out.stderr}")
    owned = sorted({p["pcpu"] for p in json.loads(out.stdout)["pcpus"] if p["counter_mask"] != 0})
    # A tenant that swapped (GUEST_OWNED at some load) owned counters wherever it ran; an idle one
    # never owned any.
    expected = t["pcpus_run"] if t["swaps"] > 0 else []
    print(f"{t['tenant']}: owned counters on pCPUs {owned}, simulation ran it on {t['pcpus_run']} ({t['swaps']} swaps)")
    if t["policy"] == "reviewed" and owned != expected:
        sys.exit(f"tenant {t['tenant']}: server says {owned}, simulation {expected}")
PY

# 2. /metrics: lost overflows for the seed-v5 tenant only, as many as the simulation lost.
curl -sf "127.0.0.1:$server_metrics/metrics" > "$work/metrics.txt"
lost_metric() { awk -v t="tenant=\"$1\"" '$1 ~ /^fleetpmu_overflows_lost_total\{/ && index($1, t) {s += $2} END {print s + 0}' "$work/metrics.txt"; }
lost_sim() { python3 -c "import json,sys; print(sum(t['overflows']['lost'] for t in json.load(open('$work/summary.json'))['tenants'] if t['tenant']=='$1'))"; }
for tenant in acme globex initech; do
  echo "$tenant: lost overflows /metrics $(lost_metric $tenant), simulation $(lost_sim $tenant)"
  [[ "$(lost_metric $tenant)" == "$(lost_sim $tenant)" ]] || fail "/metrics and the simulation disagree on $tenant's lost overflows"
done
[[ "$(lost_metric initech)" -gt 0 ]] || fail "no lost overflows for the seed-v5 tenant"

# 3. A tenant token reads its own tenant and nothing else.
ctl --token_file "$work/acme.token" ownership --tenant acme > /dev/null || fail "acme's token cannot read acme"
if ctl --token_file "$work/acme.token" ownership --tenant initech > "$work/denied.out" 2>&1; then
  fail "acme's token read initech"
fi
grep -q "may not read" "$work/denied.out" || fail "unexpected refusal: $(cat "$work/denied.out")"

# 4. A malformed batch (counter index >= N) is rejected whole; the next good one is stored.
kill -TERM "$agent_pid"; wait "$agent_pid" || true
epoch=$(sqlite3 "$work/spool.db" "SELECT value FROM meta WHERE key = 'epoch'")
seq=$(sqlite3 "$work/spool.db" "SELECT value FROM meta WHERE key = 'next_seq'")
now=$(date +%s%N)
cat > "$work/bad.txt" <<BATCH
agent_epoch: $epoch
seq: $seq
created_unix_ns: $now
reports {
  host_id: "e2e-host"
  interval { start_unix_ns: $now end_unix_ns: $((now + 1000000000)) }
  overflow_events { time_unix_ns: $((now + 1)) pcpu: 0 counter: 20 owner_kind: OWNER_KIND_HOST host_event: "host-cycles" event_code: 17 overflow_class: OVERFLOW_CLASS_DELIVERED }
}
BATCH
protoc --encode=fleetpmu.v1.Batch -I "$src/proto" fleetpmu/v1/ingest.proto < "$work/bad.txt" > "$work/bad.bin" \
  || fail "cannot encode the malformed batch"
sqlite3 "$work/spool.db" "INSERT INTO batches (seq, size, body) VALUES ($seq, $(stat -c %s "$work/bad.bin"), readfile('$work/bad.bin'));
                          UPDATE meta SET value = $((seq + 1)) WHERE key = 'next_seq';"
intervals_before=$(sqlite3 "$work/server.db" "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats")
"$bin/fleetpmu-agent" --config "$work/agent.textproto" >> "$work/agent.log" 2>&1 & agent_pid=$!; pids+=("$agent_pid")
wait_for "the agent" test -S "$work/shim.sock"
sed -i 's/duration { seconds: 20 }/duration { seconds: 2 }/' "$work/shim.textproto"
"$bin/fleetpmu-shim" --config "$work/shim.textproto" >> "$work/shim.log" 2>&1 || fail "the second shim run failed"
wait_for "the spool to drain" spool_empty
intervals_after=$(sqlite3 "$work/server.db" "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats")
rejected=$(curl -sf "127.0.0.1:$server_metrics/metrics" | awk '$1 ~ /^fleetpmu_ingest_batches_rejected_total\{reason="counter_out_of_range"/ {print $2}')
echo "malformed batch seq $seq: rejected counter_out_of_range=$rejected; intervals $intervals_before -> $intervals_after"
grep -q "server refused batch $seq: INVALID_BATCH" "$work/agent.log" || fail "the agent did not see batch $seq refused"
[[ "$rejected" == 1 ]] || fail "the server did not count the rejection"
[[ "$intervals_after" -gt "$intervals_before" ]] || fail "the good batch after the bad one was not stored"
echo PASS
