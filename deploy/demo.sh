#!/usr/bin/env bash
# `make demo`: a small fleetpmu fleet on loopback, with TLS, from the freshly built binaries:
#   fleetpmu-server (mTLS ingest, TLS Query API with an admin token, SQLite)
#   demo-arm-1: sim shim + agent, every tenant `reviewed`       (deploy/examples/sim-host)
#   demo-arm-2: sim shim + agent, tenant initech on `seed-v5`   (deploy/examples/sim-host-seed-v5)
#   Prometheus and Alertmanager with dashboards/alerts/fleetpmu.rules.yml, when installed
# Certificates, tokens, configs, databases and logs go to the state folder. It prints the
# ownership table from fleetpmuctl, the URLs, and when the lost-overflow alert fires.
#
# Usage: deploy/demo.sh [--duration=SECONDS] [--state-dir=DIR] [--port-base=PORT]
#   --duration   stop by itself after this many seconds; 0 (default) runs until Ctrl-C
#   --state-dir  default .demo (recreated at every start)
#   --port-base  first of 12 consecutive loopback ports, default 17400
# Environment: FLEETPMU_BIN (default build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=0
state=.demo
port_base=17400
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
for arg in "$@"; do
  case "$arg" in
    --duration=*) duration="${arg#--duration=}" ;;
    --state-dir=*) state="${arg#--state-dir=}" ;;
    --port-base=*) port_base="${arg#--port-base=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$duration" =~ ^[0-9]+$ ]] || { echo "demo: --duration must be whole seconds, got '$duration'" >&2; exit 2; }
[[ "$port_base" =~ ^[0-9]+$ && "$port_base" -ge 1024 && "$port_base" -le 65500 ]] \
  || { echo "demo: --port-base must be a port in 1024..65500, got '$port_base'" >&2; exit 2; }
[[ -n "$state" && "$state" != "/" ]] || { echo "demo: --state-dir must name a folder" >&2; exit 2; }
bin="${FLEETPMU_BIN:-build/bin}"
for b in fleetpmu-server fleetpmu-agent fleetpmu-shim fleetpmuctl; do
  [[ -x "$bin/$b" ]] || { echo "demo: $bin/$b is missing: run 'make build' first" >&2; exit 1; }
done
bin=$(cd "$bin" && pwd)

ingest=$port_base; query=$((port_base + 1)); server_metrics=$((port_base + 2))
prom=$((port_base + 10)); am=$((port_base + 11))
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $ingest $query $server_metrics $((port_base + 3)) $((port_base + 4)) $prom $am; do
  if in_use "$p"; then
    echo "demo: port 127.0.0.1:$p is in use (another demo still running?); pick others with --port-base" >&2
    exit 1
  fi
done

rm -rf "$state"
mkdir -p "$state"
state=$(cd "$state" && pwd)

# --- processes: started here, all stopped on any exit -------------------------------------
pids=()
names=()
stopping=0
stop_all() {
  stopping=1
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
on_exit() {
  local rc=$?
  set +e  # a failing echo must not cut the clean-up short
  trap - EXIT INT TERM HUP
  trap '' PIPE  # stdout may be gone (demo | head): still stop everything
  if [[ ${#pids[@]} -gt 0 ]]; then
    echo
    echo "demo: stopping ${#pids[@]} processes"
    stop_all
    echo "demo: stopped; nothing left running. State and logs: $state"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE
start() {  # start <name> <command...>: runs in the background, output to <state>/<name>.log
  local name=$1; shift
  "$@" > "$state/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "demo: ${names[$i]} exited; the end of $state/${names[$i]}.log:" >&2
      tail -n 15 "$state/${names[$i]}.log" >&2
      exit 1
    fi
  done
}
wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  while [[ $SECONDS -lt $deadline ]]; do
    "$@" > /dev/null 2>&1 && return 0
    check_alive
    sleep 0.1
  done
  echo "demo: timed out waiting for $what" >&2
  exit 1
}

# --- certificates and the admin token ------------------------------------------------------
hosts=(demo-arm-1 demo-arm-2)
examples=(sim-host sim-host-seed-v5)
deploy/gen-certs.sh "$state/pki" --server-name localhost --server-name 127.0.0.1 \
  --agent "${hosts[0]}" --agent "${hosts[1]}" --days 2 > /dev/null
openssl rand -hex 24 > "$state/admin.token"
"$bin/fleetpmuctl" hash-token --role admin < "$state/admin.token" > "$state/query-tokens"

cat > "$state/server.textproto" <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$state/server.db" }
tls {
  ca_file: "$state/pki/ca.pem"
  cert_file: "$state/pki/server.pem"
  key_file: "$state/pki/server.key"
  require_client_cert: true
}
tokens_file: "$state/query-tokens"
CFG
start server "$bin/fleetpmu-server" --config "$state/server.textproto"
wait_for "fleetpmu-server" 30 curl -sf "http://127.0.0.1:$server_metrics/metrics"

for i in 0 1; do
  host=${hosts[$i]}
  cat > "$state/$host-agent.textproto" <<CFG
host_id: "$host"
shim_socket: "$state/$host.sock"
spool_path: "$state/$host-spool.db"
server_address: "localhost:$ingest"
tls { ca_file: "$state/pki/ca.pem" cert_file: "$state/pki/$host.pem" key_file: "$state/pki/$host.key" }
metrics_listen: "127.0.0.1:$((port_base + 3 + i))"
backoff_min { nanos: 100000000 }
backoff_max { seconds: 2 }
CFG
  # Real time, a report every 2 s so that the tables and graphs fill quickly.
  sed -e "s|agent_socket: \"/run/fleetpmu/shim.sock\"|agent_socket: \"$state/$host.sock\"|" \
      -e 's/report_interval { seconds: 10 }/report_interval { seconds: 2 }/' \
      "deploy/examples/${examples[$i]}.textproto" > "$state/$host-shim.textproto"
  start "$host-agent" "$bin/fleetpmu-agent" --config "$state/$host-agent.textproto"
  wait_for "the agent of $host" 30 test -S "$state/$host.sock"
  start "$host-shim" "$bin/fleetpmu-shim" --config "$state/$host-shim.textproto"
done

# --- Prometheus and Alertmanager, when installed --------------------------------------------
have_prom=0
if command -v prometheus > /dev/null && command -v prometheus-alertmanager > /dev/null; then
  have_prom=1
  cat > "$state/alertmanager.yml" <<CFG
# The demo's Alertmanager keeps alerts for its UI and API; it notifies no one.
route:
  receiver: demo
  group_by: [alertname, host, tenant]
  group_wait: 5s
  group_interval: 30s
receivers:
  - name: demo
CFG
  cat > "$state/prometheus.yml" <<CFG
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $root/dashboards/alerts/fleetpmu.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$am"]
scrape_configs:
  - job_name: fleetpmu-server
    static_configs:
      - targets: ["127.0.0.1:$server_metrics"]
  - job_name: fleetpmu-agent
    static_configs:
      - targets: ["127.0.0.1:$((port_base + 3))", "127.0.0.1:$((port_base + 4))"]
CFG
  start alertmanager prometheus-alertmanager --config.file="$state/alertmanager.yml" \
    --storage.path="$state/alertmanager" --web.listen-address="127.0.0.1:$am" --cluster.listen-address=
  start prometheus prometheus --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address="127.0.0.1:$prom"
  wait_for "Alertmanager" 30 curl -sf "http://127.0.0.1:$am/-/ready"
  wait_for "Prometheus" 30 curl -sf "http://127.0.0.1:$prom/-/ready"
fi

# --- what to show -----------------------------------------------------------------------------
ctl() { "$bin/fleetpmuctl" --server "localhost:$query" --ca_file "$state/pki/ca.pem" --token_file "$state/admin.token" "$@"; }
owns_counters() {  # owns_counters <tenant> <host>: the server has that tenant's ownership there
  ctl ownership --tenant "$1" --host "$2" --json \
    | python3 -c 'import json, sys; sys.exit(0 if any(p["counter_mask"] for p in json.load(sys.stdin).get("pcpus", [])) else 1)'
}
first_reports_stored() { owns_counters acme "${hosts[0]}" && for t in acme globex initech; do owns_counters "$t" "${hosts[1]}" || return 1; done; }
echo "demo: server, 2 hosts (shim + agent each)$([[ $have_prom == 1 ]] && echo ", Prometheus, Alertmanager") started; waiting for the first reports"
wait_for "both hosts' first reports" 60 first_reports_stored
echo
echo "== fleetpmuctl hosts"
ctl hosts
# The mixed host: acme and globex `reviewed`, initech on seed-v5 (per pCPU, so one host only).
for tenant in acme globex initech; do
  echo
  echo "== fleetpmuctl ownership --tenant $tenant --host ${hosts[1]}"
  ctl ownership --tenant "$tenant" --host "${hosts[1]}"
done
echo
echo "== where to look"
echo "  server /metrics     http://127.0.0.1:$server_metrics/metrics"
echo "  agents /metrics     http://127.0.0.1:$((port_base + 3))/metrics  http://127.0.0.1:$((port_base + 4))/metrics"
if [[ $have_prom == 1 ]]; then
  echo "  Prometheus          http://127.0.0.1:$prom/alerts"
  echo "  Alertmanager        http://127.0.0.1:$am/#/alerts"
else
  echo "  (Prometheus and Alertmanager are not installed: deploy/install-deps.sh installs them)"
fi
echo "  fleetpmuctl         $bin/fleetpmuctl --server localhost:$query --ca_file $state/pki/ca.pem --token_file $state/admin.token lost"
echo "  state and logs      $state"
echo
if [[ "$duration" -gt 0 ]]; then echo "demo: running for ${duration}s (Ctrl-C stops it sooner)"; else echo "demo: running; Ctrl-C stops it"; fi

# --- run: report the lost-overflow alert once it fires ---------------------------------------
firing_lost_alerts() {
  curl -sfG "http://127.0.0.1:$am/api/v2/alerts" --data-urlencode 'filter=alertname="FleetpmuOverflowsLost"' \
    --data-urlencode 'active=true' | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    print(a["annotations"].get("summary", a["labels"]))'
}
announced=""
deadline=$((SECONDS + duration))
while [[ "$duration" == 0 || $SECONDS -lt $deadline ]]; do
  check_alive
  if [[ $have_prom == 1 ]]; then
    while IFS= read -r line; do
      [[ -z "$line" || "$announced" == *"|$line|"* ]] && continue
      announced+="|$line|"
      echo "demo: ALERT FleetpmuOverflowsLost firing in Alertmanager: $line"
    done < <(firing_lost_alerts 2>/dev/null || true)
  fi
  sleep 1
done
echo "demo: ${duration}s are up"
if [[ $have_prom == 1 && -z "$announced" ]]; then
  echo "demo: the lost-overflow alert did not fire in ${duration}s (the first scrape and evaluation take about 15 s)"
fi
echo
echo "== fleetpmuctl lost"
ctl lost || true
