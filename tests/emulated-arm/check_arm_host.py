#!/usr/bin/env python3
"""Decides the ARM host end-to-end test (arm_host_e2e_test.sh) from what the server stored and
what the guest printed, never from QEMU's exit status.

Inputs: the guest's serial log (markers `FLEETPMU-E2E: <what> <value>` from the guest's
run.sh) and the JSON answers of fleetpmuctl on the build machine (`hosts`, `ownership`, `lost`,
`stats`, each with --json). Checks:
  * the guest ran the apt-installed fleetpmu-agent package, its agent and kvm shim exited
    cleanly and the agent's spool drained (every report acknowledged by the server);
  * `hosts`: the ARM host with arch aarch64, the 7.x kernel, the kvm backend in VHE, its real
    /sys PMU devices (exactly what the guest's /sys/bus/event_source/devices lists),
    SET_NR_COUNTERS, N = 6 on every pCPU;
  * `ownership`: the canary VM of the tenant owns GENMASK(h-1,0) | BIT(31) with h = 3 on the
    pCPUs its vCPUs ran on (at least those of the shim's last round), with a resident share;
  * `lost`: no lost overflow for the tenant; `stats`: overflows were delivered (so "none
    lost" is not vacuous).

Usage: check_arm_host.py --serial LOG --dir DIR --host H --tenant T --vm V --h H
  DIR holds hosts.json, ownership.json, lost.json, stats.json.
"""
import argparse
import json
import os
import re
import sys


def guest_mask(h):
    return ((1 << h) - 1) | (1 << 31)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--serial", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--vm", required=True)
    p.add_argument("--h", type=int, required=True)
    args = p.parse_args()

    failures = []

    def check(ok, what):
        print(("PASS " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)
        return ok

    serial = open(args.serial, errors="replace").read()
    marks = {}
    for line in serial.splitlines():
        m = re.match(r"^FLEETPMU-E2E: (\S+) ?(.*)$", line.strip())
        if m:
            marks.setdefault(m.group(1), m.group(2))

    def load(name):
        path = os.path.join(args.dir, name)
        try:
            return json.load(open(path))
        except (OSError, ValueError) as error:
            check(False, f"{name}: {error}")
            return {}

    # The guest.
    check(re.search(r"^FLEETPMU-EMU: run\.sh exit 0\b", serial, re.M) is not None, "the guest's run.sh finished with 0")
    check(marks.get("installed", "").startswith("fleetpmu-agent="),
          f"fleetpmu-agent installed by apt in the root: {marks.get('installed', 'missing')}")
    check(marks.get("shim_exit") == "0", f"fleetpmu-shim (kvm backend) exited 0: {marks.get('shim_exit', 'missing')}")
    check(marks.get("spool_drained") == "yes", f"the agent's spool drained: {marks.get('spool_drained', 'missing')}")
    check(marks.get("agent_exit") == "0", f"fleetpmu-agent exited 0: {marks.get('agent_exit', 'missing')}")
    sysfs_pmus = sorted(marks.get("sysfs_pmus", "").split())
    summary = {}
    try:
        summary = json.loads(marks.get("shim_summary", "{}"))
    except ValueError:
        check(False, "the shim's summary is JSON")

    # hosts
    hosts = [h for h in load("hosts.json").get("hosts", []) if h.get("host_info", {}).get("host_id") == args.host]
    if check(len(hosts) == 1, f"fleetpmuctl hosts lists {args.host}"):
        info = hosts[0]["host_info"]
        support = info.get("kvm_pmu_support", {})
        pmus = sorted(d.get("name", "") for d in info.get("pmu_devices", []))
        pcpus = info.get("pcpus", [])
        check(info.get("arch") == "aarch64", f"arch {info.get('arch')!r} == 'aarch64'")
        check(info.get("kernel", "").startswith("7."), f"kernel {info.get('kernel')!r} is the 7.x kernel")
        check(info.get("backend") == "BACKEND_KVM", f"backend {info.get('backend')}")
        check(info.get("vhe") is True and support.get("kvm_mode") == "vhe",
              f"VHE: vhe={info.get('vhe')} kvm_mode={support.get('kvm_mode')!r}")
        check(info.get("kvm_present") is True, f"kvm_present {info.get('kvm_present')}")
        check(support.get("set_nr_counters") is True, f"kvm_pmu_support.set_nr_counters {support.get('set_nr_counters')}")
        check(support.get("host_counters") == 6, f"kvm_pmu_support.host_counters {support.get('host_counters')} == 6")
        check(any(n.startswith("armv8_pmuv3") for n in pmus), f"an armv8_pmuv3 PMU device among {pmus}")
        check(bool(sysfs_pmus) and pmus == sysfs_pmus,
              f"pmu_devices {pmus} == the guest's /sys/bus/event_source/devices {sysfs_pmus}")
        check(len(pcpus) == 2 and all(c.get("num_counters") == 6 and c.get("pmu_id", "").startswith("armv8_pmuv3")
                                      for c in pcpus),
              "2 pCPUs, each with N=6 on " + ", ".join(f"{c.get('pcpu', 0)}:{c.get('pmu_id')}/{c.get('num_counters')}"
                                                        for c in pcpus))
        check(int(hosts[0].get("durable_seq", 0)) >= 3, f"durable_seq {hosts[0].get('durable_seq')} >= 3 batches")

    # ownership
    want = guest_mask(args.h)
    owned = [c for c in load("ownership.json").get("pcpus", []) if c.get("host_id") == args.host]
    if check(bool(owned), f"fleetpmuctl ownership --tenant {args.tenant} has pCPUs of {args.host}"):
        for c in owned:
            vms = {v.get("vm_id"): v for v in c.get("vms", [])}
            vm = vms.get(args.vm, {})
            check(c.get("counter_mask") == want and vm.get("counter_mask") == want and vm.get("guest_counters") == args.h,
                  f"pCPU {c.get('pcpu', 0)}: {args.vm} (h={vm.get('guest_counters')}) owns "
                  f"0x{vm.get('counter_mask', 0):08x} == counters 0-{args.h - 1} + C (0x{want:08x})")
            check(float(vm.get("resident_share", 0)) > 0, f"pCPU {c.get('pcpu', 0)}: resident share {vm.get('resident_share')}")
        ran = set()
        for vm in summary.get("vms", []):
            if vm.get("vm_id") == args.vm:
                for vcpu in vm.get("vcpus", []):
                    ran.update(int(p) for p in vcpu.get("resident_ms_by_pcpu", {}))
        listed = {int(c.get("pcpu", 0)) for c in owned}
        check(bool(ran) and ran <= listed,
              f"the pCPUs the last round's vCPUs ran on {sorted(ran)} are among the owned pCPUs {sorted(listed)}")

    # lost and stats
    lost = load("lost.json")
    rows = [r for r in lost.get("rows", []) if int(r.get("count", 0)) > 0]
    check(not rows and int(lost.get("total_lost", 0)) == 0,
          f"fleetpmuctl lost --tenant {args.tenant}: total_lost {lost.get('total_lost')} rows {rows}")
    delivered = lost_sum = 0
    for entry in load("stats.json").get("stats", []):
        if entry.get("host_id") != args.host:
            continue
        overflows = entry.get("stats", {}).get("overflows", {})
        delivered += int(overflows.get("delivered", 0))
        lost_sum += int(overflows.get("lost", 0))
    check(delivered > 0 and lost_sum == 0, f"fleetpmuctl stats: {delivered} overflows delivered, {lost_sum} lost")

    print(f"{len(failures)} failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
