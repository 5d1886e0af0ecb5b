#!/usr/bin/env bash
# `make demo` as a user runs it (deploy/demo.sh on the built binaries):
#  1. with --duration it stops by itself, having printed the hosts, the ownership table of the
#     seed-v5 tenant, the URLs, the lost-overflow alert firing in Alertmanager (tenant initech on
#     the seed-v5 host) and the lost table; nothing it started is left running;
#  2. without --duration it runs until Ctrl-C (SIGINT), then stops everything it started.
# Usage: demo_test.sh <bin dir> <source dir>
set -euo pipefail
bin=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d)
demo_pid=""
cleanup() {
  [[ -n "$demo_pid" ]] && kill -TERM "$demo_pid" 2>/dev/null
  pkill -KILL -f "$work/state" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "== demo output"; tail -n 40 "$work/out.txt"; exit 1; }
left_running() { pgrep -af "$work/state" | grep -v pgrep || true; }
port_base=$((20000 + RANDOM % 20000))
demo() { FLEETPMU_BIN="$bin" "$src/deploy/demo.sh" --state-dir="$work/state" --port-base="$port_base" "$@"; }

# 1. --duration: long enough for two Prometheus evaluations after the first reports.
demo --duration=40 > "$work/out.txt" 2>&1 || fail "the demo exited with status $?"
grep -q '^== fleetpmuctl ownership --tenant initech --host demo-arm-2' "$work/out.txt" || fail "no ownership table"
grep -Eq '^demo-arm-2 +[0-9]+ +6 +0-3,C .* initech-batch +4 ' "$work/out.txt" \
  || fail "the ownership table has no row of initech-batch (h=4, counters 0-3 and the cycle counter) on demo-arm-2"
grep -q 'Prometheus  *http://127.0.0.1:' "$work/out.txt" || fail "no Prometheus URL"
grep -q 'ALERT FleetpmuOverflowsLost firing in Alertmanager: .*tenant initech on host demo-arm-2' "$work/out.txt" \
  || fail "the lost-overflow alert was not reported for initech on demo-arm-2"
grep -q 'ALERT .*demo-arm-1' "$work/out.txt" && fail "an alert fired for the all-reviewed host demo-arm-1"
grep -Eq '^initech +demo-arm-2 +counter_not_loaded +[1-9]' "$work/out.txt" || fail "no lost table for initech"
grep -q 'stopped; nothing left running' "$work/out.txt" || fail "the demo did not say it stopped"
[[ -z "$(left_running)" ]] || fail "processes left running after --duration: $(left_running)"
echo "--duration=40: ownership table, alert for initech on demo-arm-2, lost table; nothing left running"

# 2. No duration: runs until Ctrl-C. Job control on, as in a terminal: without it a background
# job starts with SIGINT ignored and no trap can take it back.
set -m
FLEETPMU_BIN="$bin" "$src/deploy/demo.sh" --state-dir="$work/state" --port-base="$port_base" > "$work/out.txt" 2>&1 &
demo_pid=$!
set +m
for _ in $(seq 600); do
  grep -q 'demo: running; Ctrl-C stops it' "$work/out.txt" && break
  kill -0 "$demo_pid" 2>/dev/null || fail "the demo ended before it was running"
  sleep 0.1
done
grep -q 'demo: running; Ctrl-C stops it' "$work/out.txt" || fail "the demo never said it was running"
[[ -n "$(left_running)" ]] || fail "the demo says it is running but nothing of it is"
kill -INT -- "-$demo_pid"  # what Ctrl-C does: SIGINT to the foreground process group
status=0
wait "$demo_pid" || status=$?
demo_pid=""
[[ "$status" == 130 ]] || fail "Ctrl-C ended the demo with status $status, expected 130"
[[ -z "$(left_running)" ]] || fail "processes left running after Ctrl-C: $(left_running)"
echo "Ctrl-C: stopped with status 130; nothing left running"
echo PASS
