#!/usr/bin/env bash
# The lost-overflow alert end to end, with the real Prometheus and Alertmanager (Debian packages)
# on loopback and the shipped rules (dashboards/alerts/fleetpmu.rules.yml):
#   host-seed (one tenant, initech, on seed-v5)  -> shim -> agent -.
#   host-good (every tenant `reviewed`)          -> shim -> agent --> server /metrics
#   Prometheus scrapes the server, evaluates the rules, sends to Alertmanager, which posts to a
#   webhook receiver in this test.
# Passes when the webhook receives FleetpmuOverflowsLost labelled tenant=initech, host=host-seed,
# and neither the webhook nor Prometheus has any alert for host-good, although Prometheus has
# evaluated host-good's overflows in the same run.
# Usage: alert_e2e_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$1
src=$(cd "$2" && pwd)  # Prometheus resolves rule_files relative to its config file
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; tail -n 8 "$f"; done; exit 1; }
wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out after ${seconds}s waiting for $what"
}
for tool in prometheus prometheus-alertmanager; do
  command -v "$tool" > /dev/null || fail "$tool is not installed (deploy/install-deps.sh installs it)"
done

base=$((20000 + RANDOM % 20000))
ingest=$base; query=$((base + 1)); server_metrics=$((base + 2))
prom=$((base + 3)); am=$((base + 4)); hook=$((base + 5))
cat > "$work/server.textproto" <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$work/server.db" }
allow_plaintext: true
CFG
"$bin/fleetpmu-server" --config "$work/server.textproto" > "$work/server.log" 2>&1 & pids+=($!)

# Two hosts, each a shim (real time, 1 s reports) and an agent.
start_host() {  # start_host <host id> <sim example> <agent metrics port>
  cat > "$work/$1-agent.textproto" <<CFG
host_id: "$1"
shim_socket: "$work/$1.sock"
spool_path: "$work/$1-spool.db"
server_address: "127.0.0.1:$ingest"
allow_plaintext: true
metrics_listen: "127.0.0.1:$3"
backoff_min { nanos: 50000000 }
backoff_max { nanos: 500000000 }
CFG
  sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$work/$1.sock\"|" \
      -e 's/report_interval { seconds: 10 }/report_interval { seconds: 1 }/' \
      "$src/deploy/examples/$2.textproto" > "$work/$1-shim.textproto"
  "$bin/fleetpmu-agent" --config "$work/$1-agent.textproto" > "$work/$1-agent.log" 2>&1 & pids+=($!)
  wait_for "$1's agent" 20 test -S "$work/$1.sock"
  "$bin/fleetpmu-shim" --config "$work/$1-shim.textproto" > "$work/$1-shim.log" 2>&1 & pids+=($!)
}
wait_for "the server" 20 curl -sf "127.0.0.1:$server_metrics/metrics"
start_host host-seed sim-host-seed-v5 $((base + 6))
start_host host-good sim-host $((base + 7))

# The webhook receiver: one line of JSON per notification.
cat > "$work/hook.py" <<'PY'
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
PY
touch "$work/notifications.jsonl"
python3 "$work/hook.py" "$hook" "$work/notifications.jsonl" > "$work/hook.log" 2>&1 & pids+=($!)

cat > "$work/alertmanager.yml" <<CFG
route:
  receiver: hook
  group_by: [alertname, host, tenant]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:$hook/
CFG
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am" --cluster.listen-address= > "$work/alertmanager.log" 2>&1 & pids+=($!)

cat > "$work/prometheus.yml" <<CFG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $src/dashboards/alerts/fleetpmu.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$am"]
scrape_configs:
  - job_name: fleetpmu-server
    static_configs:
      - targets: ["127.0.0.1:$server_metrics"]
CFG
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="127.0.0.1:$prom" > "$work/prometheus.log" 2>&1 & pids+=($!)

query() { curl -sfG "127.0.0.1:$prom/api/v1/query" --data-urlencode "query=$1"; }
has_result() { query "$1" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'; }
seed_alert_received() {
  python3 - "$work/notifications.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    for a in json.loads(line)["alerts"]:
        l = a["labels"]
        if (a["status"] == "firing" and l.get("alertname") == "FleetpmuOverflowsLost"
                and l.get("host") == "host-seed" and l.get("tenant") == "initech"):
            sys.exit(0)
sys.exit(1)
PY
}
wait_for "Prometheus and Alertmanager" 30 curl -sf "127.0.0.1:$am/-/ready"
rules_loaded() { curl -sf "127.0.0.1:$prom/api/v1/rules" | grep -q '"name":"FleetpmuOverflowsLost"'; }
wait_for "Prometheus to load dashboards/alerts/fleetpmu.rules.yml" 30 rules_loaded
wait_for "the lost-overflow alert at the webhook" 90 seed_alert_received
echo "webhook: FleetpmuOverflowsLost{host=host-seed, tenant=initech} received"

# host-good was evaluated with real data (its overflows grew over the same window), yet nothing
# fired for it.
has_result 'sum by (host) (increase(fleetpmu_overflows_total{host="host-good"}[5m])) > 0' \
  || fail "Prometheus has no overflow increase for host-good: the negative case saw no data"
has_result 'ALERTS{host="host-good"}' && fail "Prometheus has an alert for the all-reviewed host: $(query 'ALERTS{host="host-good"}')"
if grep -q '"host":"host-good"' "$work/notifications.jsonl"; then
  fail "Alertmanager notified about the all-reviewed host: $(grep '"host":"host-good"' "$work/notifications.jsonl")"
fi
has_result 'ALERTS{alertname="FleetpmuOverflowsLost", host="host-seed", tenant=~"acme|globex"}' \
  && fail "the reviewed tenants of host-seed fired too"
echo "host-good: overflows evaluated, no alert; host-seed: only initech"
echo PASS
