#!/usr/bin/env bash
# ARM host end to end (issue 8 item 6): an arm64 Debian root with the project's arm64 .deb
# installed by apt (make-arm-root.sh) boots in qemu-system-aarch64 on the trixie-backports 7.x
# kernel with KVM in VHE mode. In it, /init starts the packaged fleetpmu-agent and then
# fleetpmu-shim with the kvm backend (streaming; the packaged /etc/fleetpmu/shim.textproto with
# one canary VM set to h = 3 and a 2 s report interval). The agent reports over QEMU user
# networking with restrict=on, whose only way out is one guestfwd: 10.0.2.100:7443 in the guest
# -> guestfwd-relay.py -> 127.0.0.1:<ingest port> here, where fleetpmu-server (the native build)
# runs with mTLS (certificates from deploy/gen-certs.sh; the agent's CN is its host_id). No packet
# leaves the machine.
#
# After ~3 reports the guest stops the shim, waits for the agent's spool to drain (every batch
# acknowledged), stops the agent and powers off. Then fleetpmuctl here must list the host with
# its real /sys PMU facts and KVM support, the canary VM owning counters 0-2 + C on the pCPUs its
# vCPUs ran on, and no lost overflow (check_arm_host.py). On failure: the tail of the guest's
# serial log and of the server log.
#
# Usage: arm_host_e2e_test.sh --bin DIR --arm64-build DIR [--cache DIR] [--work DIR]
#   --bin          native build's bin/ (fleetpmu-server, fleetpmuctl)
#   --arm64-build  the arm64 build tree whose packages go into the root (cpack)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="" arm64_build="" cache="$repo/build-emu/cache" work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --arm64-build) arm64_build="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "arm_host_e2e_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
for program in "$bin/fleetpmu-server" "$bin/fleetpmuctl"; do
  [[ -x "$program" ]] || { echo "arm_host_e2e_test: no $program (build the native tree)" >&2; exit 1; }
done
[[ -n "$work" ]] || work="$(mktemp -d)"
rm -rf "$work"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
host_id=arm-emu-1 tenant=fleetpmu-canary vm=canary-1 h=3
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
t_start=$(now)

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
serial="$work/SERIAL.log"
fail() {
  echo "FAIL: $*"
  echo "---- last 60 lines of the guest's serial log ($serial) ----"
  tail -n 60 "$serial" 2>/dev/null | cut -c1-2000 || true
  echo "---- last 20 lines of the server log ($work/server.log) ----"
  tail -n 20 "$work/server.log" 2>/dev/null || true
  exit 1
}

# The root (cached by the .debs' content) and the kernel.
"$here/make-arm-root.sh" --build "$arm64_build" --cache "$cache" >"$work/root.txt" 2>"$work/make-arm-root.log" ||
  { cat "$work/make-arm-root.log"; fail "make-arm-root.sh failed"; }
root_cpio="$(sed -n 's/^root //p' "$work/root.txt")"
image="$cache/kernels/trixie-backports/Image"
[[ -s "$root_cpio" && -s "$image" ]] || fail "no root ($root_cpio) or kernel ($image)"
grep -E 'mmdebstrap|cached root' "$work/make-arm-root.log" || true

# Certificates: the server is 127.0.0.1 for fleetpmuctl and 10.0.2.100 for the guest.
"$repo/deploy/gen-certs.sh" "$work/certs" --server-name 127.0.0.1 --server-name 10.0.2.100 --agent "$host_id" \
  --days 2 >/dev/null || fail "gen-certs.sh failed"

base=$((20000 + RANDOM % 20000))
ingest=$base query=$((base + 1)) server_metrics=$((base + 2))
echo "admin-token-$RANDOM$RANDOM" >"$work/admin.token"
"$bin/fleetpmuctl" hash-token --role admin <"$work/admin.token" >"$work/tokens"
cat >"$work/server.textproto" <<CFG
ingest_listen: "127.0.0.1:$ingest"
query_listen: "127.0.0.1:$query"
metrics_listen: "127.0.0.1:$server_metrics"
storage { sqlite_path: "$work/server.db" }
tls { ca_file: "$work/certs/ca.pem" cert_file: "$work/certs/server.pem" key_file: "$work/certs/server.key" }
tokens_file: "$work/tokens"
CFG
"$bin/fleetpmu-server" --config "$work/server.textproto" >"$work/server.log" 2>&1 &
pids+=($!)
ctl() { "$bin/fleetpmuctl" --server "127.0.0.1:$query" --ca_file "$work/certs/ca.pem" --token_file "$work/admin.token" "$@"; }
for _ in $(seq 200); do
  curl -sf "127.0.0.1:$server_metrics/metrics" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -sf "127.0.0.1:$server_metrics/metrics" >/dev/null 2>&1 || fail "fleetpmu-server did not come up"

# What this run adds to the root: host name, the agent's config and certificate, the script.
overlay="$work/overlay"
mkdir -p "$overlay/etc/fleetpmu/tls" "$overlay/etc/fleetpmu-emu"
echo "$host_id" >"$overlay/etc/hostname"
cp "$work/certs/ca.pem" "$overlay/etc/fleetpmu/tls/ca.pem"
cp "$work/certs/$host_id.pem" "$overlay/etc/fleetpmu/tls/agent.pem"
cp "$work/certs/$host_id.key" "$overlay/etc/fleetpmu/tls/agent-key.pem"
cat >"$overlay/etc/fleetpmu/agent.textproto" <<CFG
# fleetpmu-agent of the emulated ARM host (tests/emulated-arm/arm_host_e2e_test.sh).
host_id: "$host_id"
shim_socket: "/run/fleetpmu/shim.sock"
spool_path: "/var/lib/fleetpmu/agent-spool.db"
server_address: "10.0.2.100:7443"
tls { ca_file: "/etc/fleetpmu/tls/ca.pem" cert_file: "/etc/fleetpmu/tls/agent.pem" key_file: "/etc/fleetpmu/tls/agent-key.pem" }
batch_max_delay { nanos: 200000000 }
backoff_min { nanos: 100000000 }
backoff_max { seconds: 1 }
metrics_listen: "127.0.0.1:9465"
CFG
cat >"$overlay/etc/fleetpmu-emu/run.sh" <<'GUEST'
# The emulated ARM host's payload, run by /init (make-arm-root.sh) as root with no systemd.
say() { echo "FLEETPMU-E2E: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# The agent's metric NAME summed over its label sets, "" while /metrics does not answer.
metric() {
  bash -c 'exec 3<>/dev/tcp/127.0.0.1/9465 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2; found = 1} END {if (found) print s}'
}
# wait_metric NAME OP VALUE SECONDS, OP one of ge, eq: polls every 0.2 s.
wait_metric() {
  i=0
  while [ "$i" -lt $(($4 * 5)) ]; do
    v=$(metric "$1")
    if [ -n "$v" ] && awk -v v="$v" -v w="$3" -v op="$2" 'BEGIN {exit !(op == "ge" ? v >= w : v == w)}'; then return 0; fi
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}
say "uname $(uname -m) $(uname -r)"
say "installed $(dpkg-query -W -f='${Package}=${Version}' fleetpmu-agent)"
say "sysfs_pmus $(ls /sys/bus/event_source/devices | tr '\n' ' ')"
say "kvm $(test -c /dev/kvm && echo present || echo missing) $(dmesg | grep -o 'kvm \[[0-9]*\]: .*mode initialized successfully' | head -n 1)"
mkdir -p /run/fleetpmu /var/lib/fleetpmu /run/fleetpmu-emu
# The packaged shim config, adjusted: one canary VM with h = 3 (SET_NR_COUNTERS on 7.x), a canary
# that finishes fast under emulation (SW_INCR and CPU_CYCLES counters, the cycle counter), 2 s reports.
shim_config=/run/fleetpmu-emu/shim.textproto
sed -e 's/report_interval { seconds: [0-9]* }/report_interval { seconds: 2 }/' \
    -e 's/^\( *\)vcpus: 2$/\1vcpus: 2\n\1h: 3/' \
    -e 's/canary { .* }$/canary { events: [0x00, 0x11] sample_periods: [64, 20000000] wraps: 4 use_cycle_counter: true cycle_sample_period: 20000000 timeout { seconds: 6 } }/' \
    /etc/fleetpmu/shim.textproto >"$shim_config"
for want in 'report_interval { seconds: 2 }' 'h: 3' 'sample_periods: \[64, 20000000\]' 'backend: BACKEND_KVM'; do
  grep -q "$want" "$shim_config" || { say "shim_config the packaged shim.textproto no longer has what the test adjusts ($want)"; exit 1; }
done
if ! fleetpmu-shim --config "$shim_config" --print_config >/run/fleetpmu-emu/print_config.txt 2>&1; then
  say "shim_config refused: $(tr '\n' ' ' </run/fleetpmu-emu/print_config.txt)"
  exit 1
fi
fleetpmu-agent --config /etc/fleetpmu/agent.textproto >/run/fleetpmu-emu/agent.log 2>&1 &
agent=$!
i=0
while [ ! -S /run/fleetpmu/shim.sock ] && [ "$i" -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
say "agent_up $(uptime_s)"
fleetpmu-shim --config "$shim_config" --summary_file=/run/fleetpmu-emu/summary.json >/run/fleetpmu-emu/shim.log 2>&1 &
shim=$!
if wait_metric fleetpmu_agent_batches_acked_total ge 1 60; then say "first_ack $(uptime_s)"; fi
wait_metric fleetpmu_agent_shim_reports_spooled_total ge 3 40 || say "fewer than 3 reports spooled within 40 s"
say "reports_spooled $(metric fleetpmu_agent_shim_reports_spooled_total) at $(uptime_s)"
kill -TERM "$shim"
wait "$shim"
say "shim_exit $?"
if wait_metric fleetpmu_agent_spool_batches eq 0 30; then say "spool_drained yes"; else say "spool_drained no"; fi
say "agent_metrics sent=$(metric fleetpmu_agent_batches_sent_total) acked=$(metric fleetpmu_agent_batches_acked_total) rejected=$(metric fleetpmu_agent_batches_rejected_total) reconnects=$(metric fleetpmu_agent_reconnects_total)"
kill -TERM "$agent"
wait "$agent"
say "agent_exit $?"
say "shim_summary $(tr -d '\n' </run/fleetpmu-emu/summary.json)"
tail -n 15 /run/fleetpmu-emu/agent.log | sed 's/^/FLEETPMU-AGENT: /'
tail -n 15 /run/fleetpmu-emu/shim.log | sed 's/^/FLEETPMU-SHIM: /'
GUEST
initrd="$work/initrd.cpio"
cp "$root_cpio" "$initrd"
# A second archive after the root's: the kernel unpacks both, later files replacing earlier ones.
(cd "$overlay" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >>"$initrd"

# QEMU user networking, isolated (restrict=on): the one way out is the agent's server address.
relay="$here/guestfwd-relay.py"
[[ "$relay" != *[,\ ]* ]] || fail "the relay's path '$relay' has a comma or space, which QEMU's option syntax cannot take"
netdev="user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:7443-cmd:$relay $ingest"
# The guest bounds its own waits (at most ~2.5 min in all); QEMU is stopped after this.
qemu_limit=200
t_boot=$(now)
"$here/boot-guest.sh" "$image" "$initrd" vhe "$serial" "$qemu_limit" "" -- \
  -netdev "$netdev" -device virtio-net-pci,netdev=net0,romfile= &
qemu=$!
pids+=($qemu)
# Boot to first report: the host's first stored report, as the server sees it.
first_report=""
while kill -0 "$qemu" 2>/dev/null; do
  # The only host of this server; the agent's hello alone leaves last_report_unix_ns at 0.
  if [[ -z "$first_report" ]] && ctl hosts --json 2>/dev/null | grep -qE '"last_report_unix_ns": "[1-9]'; then
    first_report=$(since "$t_boot")
  fi
  sleep 0.5
done
qemu_status=0
wait "$qemu" || qemu_status=$?
guest_wall=$(since "$t_boot")
[[ $qemu_status -eq 124 ]] && echo "QEMU timed out after $qemu_limit s"

# The queries cover the guest's run (ownership shares are of this range).
range="$(awk -v w="$guest_wall" 'BEGIN {printf "%ds", w + 5}')"
mkdir -p "$work/answers"
ctl hosts --json >"$work/answers/hosts.json" 2>"$work/answers/hosts.err" || true
ctl ownership --tenant "$tenant" --since "$range" --json >"$work/answers/ownership.json" 2>"$work/answers/ownership.err" || true
ctl lost --tenant "$tenant" --since "$range" --json >"$work/answers/lost.json" 2>"$work/answers/lost.err" || true
ctl stats --tenant "$tenant" --since "$range" --json >"$work/answers/stats.json" 2>"$work/answers/stats.err" || true
ctl ownership --tenant "$tenant" --since "$range" >"$work/answers/ownership.txt" 2>&1 || true

boot_at=$(sed -n 's/^FLEETPMU-EMU: boot \([0-9.]*\).*/\1/p' "$serial" | head -n 1)
ack_at=$(sed -n 's/^FLEETPMU-E2E: first_ack \([0-9.]*\).*/\1/p' "$serial" | head -n 1)
printf 'arm host e2e: init at %ss, first report acknowledged at %ss guest uptime; first report on the server %ss after QEMU started; guest %ss wall; whole test %ss\n' \
  "${boot_at:-?}" "${ack_at:-?}" "${first_report:-never}" "$guest_wall" "$(since "$t_start")"
cat "$work/answers/ownership.txt"
if ! python3 "$here/check_arm_host.py" --serial "$serial" --dir "$work/answers" --host "$host_id" \
     --tenant "$tenant" --vm "$vm" --h "$h"; then
  cat "$work/answers"/*.err 2>/dev/null || true
  fail "the server's view of the ARM host is not what the guest did (see above)"
fi
echo PASS
