#!/usr/bin/env bash
# Agent -> server over mTLS with a CA and certificates made here by the openssl CLI:
#  - the agent with its own certificate (CN = its host_id) delivers the shim's reports;
#  - an agent whose certificate names another host is refused and stores nothing;
#  - the agent refuses to start with plaintext when TLS is not configured and not allowed.
# Usage: agent_mtls_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -n 12 "$work"/*.log 2>/dev/null; exit 1; }
wait_for() { local what=$1; shift; for _ in $(seq 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; fail "timed out waiting for $what"; }

cd "$work"
ssl() { openssl "$@" >> openssl.log 2>&1 || fail "openssl $*"; }
ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca
cert() {  # cert <name> <cn> <usage> [extra SAN]
  printf 'subjectAltName=DNS:%s%s\nextendedKeyUsage=%s\n' "$2" "${4:-}" "$3" > "$1.ext"
  ssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  ssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext"
}
cert server localhost serverAuth ",IP:127.0.0.1"
cert agent tls-host clientAuth
cert impostor other-host clientAuth

base=$((20000 + RANDOM % 20000))
ingest=$base; query=$((base + 1)); server_metrics=$((base + 2))
echo "admin-token" > admin.token
"$bin/fleetpmuctl" hash-token --role admin < admin.token > tokens
cat > server.textproto <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$work/server.db" }
tls { ca_file: "$work/ca.pem" cert_file: "$work/server.pem" key_file: "$work/server.key" }
tokens_file: "$work/tokens"
CFG
agent_config() {  # agent_config <name> <cert> <metrics port>
  cat > "$1.textproto" <<CFG
host_id: "tls-host"
shim_socket: "$work/$1.sock"
spool_path: "$work/$1.db"
server_address: "localhost:$ingest"
tls { ca_file: "$work/ca.pem" cert_file: "$work/$2.pem" key_file: "$work/$2.key" }
metrics_listen: "127.0.0.1:$3"
backoff_min { nanos: 50000000 }
backoff_max { nanos: 500000000 }
CFG
}
agent_config good agent $((base + 3))
agent_config bad impostor $((base + 4))
connected() { curl -sf "127.0.0.1:$1/metrics" | grep -q '^fleetpmu_agent_connected{.*} 1'; }
spool_empty() { [[ "$(sqlite3 "$work/good.db" 'SELECT COUNT(*) FROM batches')" == 0 ]]; }

"$bin/fleetpmu-server" --config server.textproto > server.log 2>&1 & pids+=($!)
wait_for "the server" curl -sf "127.0.0.1:$server_metrics/metrics"
"$bin/fleetpmu-agent" --config good.textproto > good.log 2>&1 & pids+=($!)
"$bin/fleetpmu-agent" --config bad.textproto > bad.log 2>&1 & pids+=($!)
wait_for "the agent with its own certificate to connect" connected $((base + 3))

sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$work/good.sock\"|" \
    -e 's/  speed: 1/  speed: 0\n  duration { seconds: 4 }/' \
    -e 's/report_interval { seconds: 10 }/report_interval { seconds: 2 }/' \
    "$src/deploy/examples/sim-host.textproto" > shim.textproto
"$bin/fleetpmu-shim" --config shim.textproto > shim.log 2>&1 || fail "the shim failed"
wait_for "the spool to drain" spool_empty
stored=$(sqlite3 server.db "SELECT COUNT(DISTINCT start_unix_ns) FROM vcpu_stats WHERE host_id = 'tls-host'")
echo "mTLS agent: $stored intervals stored for host tls-host"
[[ "$stored" == 2 ]] || fail "expected 2 intervals from the mTLS agent, got $stored"

wait_for "the impostor's refusal" grep -qi "other-host\|permission\|refused" bad.log
connected $((base + 4)) && fail "an agent with another host's certificate got connected"
[[ "$(sqlite3 server.db "SELECT COUNT(*) FROM hosts WHERE host_id = 'other-host'")" == 0 ]] || fail "the impostor was registered"

# TLS absent and plaintext not allowed: a clear error at start.
sed -e '/^tls {/d' good.textproto > plain.textproto
sed -i "s|$work/good|$work/plain|g" plain.textproto
if "$bin/fleetpmu-agent" --config plain.textproto > plain.log 2>&1; then fail "the agent started without TLS or allow_plaintext"; fi
grep -qi "plaintext" plain.log || fail "no clear error without TLS: $(cat plain.log)"
echo PASS
