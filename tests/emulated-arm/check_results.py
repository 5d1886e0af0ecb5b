#!/usr/bin/env python3
"""Decides the emulated KVM test from the guest's serial log (never from QEMU's exit status).

The guest prints, per case, `FLEETPMU-RC <case> <exit status>`, `FLEETPMU-JSON <case> <summary>`
(the kvm backend's JSON summary, hypervisor-shim/kvm/kvm_summary.h) and `FLEETPMU-ERR <case>
<stderr line>`. Cases: h1, h3, h6 (must pass where the kernel can enforce h, else be refused
with the reason) and h7 (always refused: more than the host's N=6).

Usage: check_results.py SERIAL_LOG KERNEL MODE
"""
import json
import re
import sys

# What each kernel must do (ARM-EMULATION.md): 7.x has SET_NR_COUNTERS; 6.1 has neither it
# nor KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES, so h < N cannot be enforced there.
# On 6.1 the guest's cycle counter counts but its 32-bit overflow (PMCR_EL0.LC = 0) raises no
# interrupt, while event counters counting CPU_CYCLES do: the canary reports those wraps as
# irq_missing and the vPMU as invalid, which this test requires (a real negative case).
KERNELS = {
    "trixie-backports": {"limits": True, "release": r"^7\.", "cycle_irq_missing": False},
    "bookworm": {"limits": False, "release": r"^6\.1\.", "cycle_irq_missing": True},
}
HOST_N = 6  # QEMU's emulated PMUv3 has 6 event counters


def main():
    log_path, kernel, mode = sys.argv[1:4]
    with_shim = "--shim" in sys.argv[4:]
    expect = KERNELS[kernel]
    text = open(log_path, errors="replace").read()
    rcs, summaries, errors = {}, {}, {}
    for line in text.splitlines():
        m = re.match(r"^FLEETPMU-(RC|JSON|ERR) (\S+) ?(.*)$", line.strip())
        if not m:
            continue
        kind, case, rest = m.groups()
        if kind == "RC":
            rcs[case] = int(rest)
        elif kind == "JSON":
            try:
                summaries[case] = json.loads(rest)
            except json.JSONDecodeError as e:
                summaries[case] = {"unparsable": str(e)}
        else:
            errors.setdefault(case, []).append(rest)

    failures = []

    def fail(case, why):
        failures.append(f"{kernel} {mode} {case}: {why}")

    for h in (1, 3, 6, 7):
        case = f"h{h}"
        if case not in rcs:
            fail(case, "no result on the console (did the guest boot and run the case?)")
            continue
        s = summaries.get(case, {})
        err = " ".join(errors.get(case, []))
        if s.get("kernel") and not re.match(expect["release"], s["kernel"]):
            fail(case, f"booted kernel {s['kernel']}, expected {expect['release']}")
        if s.get("kvm_mode") not in (None, mode):
            fail(case, f"the shim saw KVM in mode {s.get('kvm_mode')}, booted as {mode}")
        must_pass = h <= HOST_N and (h == HOST_N or expect["limits"])
        if not must_pass:
            want = (f"h={h} exceeds the N={HOST_N}" if h > HOST_N
                    else "cannot limit the guest's PMCR_EL0.N")
            if rcs[case] != 2 or want not in err:
                fail(case, f"expected a refusal naming '{want}', got exit {rcs[case]}: {err or s}")
            else:
                print(f"PASS {kernel} {mode} {case}: refused: {err}")
            continue
        problems = [p for vm in s.get("vms", []) for v in vm["vcpus"] for p in v["problems"]]
        broken_cycle = expect["cycle_irq_missing"]
        if broken_cycle:
            # Invalid for exactly one reason: the cycle counter's interrupts never came.
            if rcs[case] != 1 or s.get("valid") is not False or not problems or not all(
                    p.startswith("counter C ") and "irq_missing" in p or "timed out" in p for p in problems):
                fail(case, f"expected the canary to find only the cycle counter's missing interrupts, "
                           f"got exit {rcs[case]}: {problems or err or s}")
                continue
        elif rcs[case] != 0 or not s.get("valid"):
            fail(case, f"exit {rcs[case]}, valid={s.get('valid')}: {problems or err or s}")
            continue
        vm = s["vms"][0]
        for vcpu in vm["vcpus"]:
            if vcpu["pmcr_n"] != h:
                fail(case, f"vCPU {vcpu['vcpu']} sees PMCR.N={vcpu['pmcr_n']}, not {h}")
            for c in vcpu["counters"]:
                if broken_cycle and c["counter"] == 31:
                    if c["count"] == 0 or c["interrupts"] != 0 or c["irq_missing"] == 0:
                        fail(case, f"cycle counter expected counting without interrupts: {c}")
                    continue
                if c["event"] == 0 and c["counter"] != 31:
                    if c["count"] != c["expected_count"] or c["interrupts"] != c["wraps_planned"]:
                        fail(case, f"SW_INCR counter {c['counter']}: {c}")
                if c["irq_missing"] or c["interrupts"] + c["coalesced"] != c["wraps"] or c["count"] == 0:
                    fail(case, f"counter {c['counter']}: {c}")
            detail = ", ".join(
                f"c{c['counter']}:ev{c['event']:#x} count={c['count']} irq={c['interrupts']}"
                f"/{c['wraps']}" + (f"+{c['coalesced']}coal" if c["coalesced"] else "")
                + (f" irq_missing={c['irq_missing']}" if c["irq_missing"] else "")
                for c in vcpu["counters"])
            verdict = "vPMU invalid as expected" if broken_cycle else "vPMU valid"
            print(f"PASS {kernel} {mode} {case}: {verdict}, PMCR.N={vcpu['pmcr_n']} via {vm['counter_limit']} "
                  f"(set_nr_counters={vm['attributes']['set_nr_counters']}, "
                  f"pmcr_n_writable={vm['attributes']['pmcr_n_writable']}, "
                  f"partition={vm['attributes']['partition']}) guest {vcpu['guest_ms']:.0f}ms: {detail}")
        for cpu in s.get("host_counters", []):
            print(f"     host cpu{cpu['cpu']}: {cpu['events']} events, multiplexing ratio "
                  f"{cpu['multiplexing_ratio']:.3f}")
    if with_shim:
        # The real fleetpmu-shim with backend: BACKEND_KVM, h = 6 on 2 vCPUs, no cycle counter.
        s = summaries.get("shim", {})
        rc = rcs.get("shim")
        vms = s.get("vms", [])
        if rc != 0 or not s.get("valid") or len(vms) != 1 or len(vms[0]["vcpus"]) != 2:
            fail("shim", f"exit {rc}, valid={s.get('valid')}: {errors.get('shim')} {s}")
        else:
            for vcpu in vms[0]["vcpus"]:
                sw = [c for c in vcpu["counters"] if c["event"] == 0]
                # Ownership residency (vcpu_residency.h): the perf task clocks work on these
                # kernels; the thread's time on the pCPUs is positive and within its wall time.
                resident = vcpu.get("resident_ms_by_pcpu", {})
                resident_ms = sum(resident.values())
                if vcpu["pmcr_n"] != 6 or not sw or any(
                        c["count"] != c["expected_count"] or c["interrupts"] != c["wraps_planned"] for c in sw):
                    fail("shim", f"vCPU {vcpu['vcpu']}: {vcpu}")
                elif (vcpu.get("residency_method") != "perf_task_clock" or not resident
                      or not 0 < resident_ms <= vcpu["wall_ms"] + 1):
                    fail("shim", f"vCPU {vcpu['vcpu']}: residency {vcpu.get('residency_method')} {resident} "
                                 f"against {vcpu['wall_ms']:.1f} ms wall")
                else:
                    print(f"PASS {kernel} {mode} shim: fleetpmu-shim kvm backend vCPU {vcpu['vcpu']}: "
                          f"PMCR.N={vcpu['pmcr_n']}, " + ", ".join(
                              f"c{c['counter']}:ev{c['event']:#x} count={c['count']} irq={c['interrupts']}/{c['wraps']}"
                              for c in vcpu["counters"])
                          + ", resident " + ", ".join(f"pCPU {p} {ms:.1f} ms" for p, ms in sorted(resident.items()))
                          + f" of {vcpu['wall_ms']:.1f} ms wall")
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
