#!/usr/bin/env python3
"""deploy/systemd: the units load (`systemd-analyze verify`, any warning about them fails), run
a program the packages install with a config that program accepts, agree with that config
(state and runtime directories, the shim socket, /dev/kvm), and stay hardened: every exposure
`systemd-analyze security --offline` reports must be one this file allows with a reason, and the
overall score stays under a ceiling.

verify needs the ExecStart program to exist, so it runs on copies of the units whose ExecStart
points at the built program instead of /usr/bin (everything else as shipped).
"""
import atexit
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib  # noqa: E402

UNITS = ("fleetpmu-server.service", "fleetpmu-agent.service", "fleetpmu-shim.service")

# `systemd-analyze security` items a unit may leave exposed, and why. Anything else it reports
# as not set fails the test: hardening cannot regress unnoticed.
NETWORK_DAEMON = {
    "RootDirectoryOrRootImage": "runs from the host's /usr (packaged binaries)",
    "RestrictAddressFamilies_AF_INET_INET6": "gRPC over TCP and /metrics",
    "RestrictAddressFamilies_AF_UNIX": "unix listen addresses; the agent's shim socket",
    "PrivateNetwork": "serves or reaches the network",
    "IPAddressDeny": "peers are anywhere the operator puts them",
    "ProcSubset": "the agent reads /proc/cpuinfo (host discovery); absl reads /proc and /sys files",
    "DeviceAllow": "DevicePolicy=closed still allows the pseudo devices (null, zero, rtc...)",
}
ALLOWED_EXPOSURE = {
    "fleetpmu-server.service": NETWORK_DAEMON,
    "fleetpmu-agent.service": NETWORK_DAEMON,
    "fleetpmu-shim.service": {
        "RootDirectoryOrRootImage": "runs from the host's /usr (packaged binaries)",
        "RestrictAddressFamilies_AF_UNIX": "the agent socket",
        "PrivateDevices": "/dev/kvm (DeviceAllow= allows it alone)",
        "DeviceAllow": "/dev/kvm",
        "SupplementaryGroups": "kvm, the group of /dev/kvm",
        "AmbientCapabilities": "CAP_PERFMON for host perf events",
        "PrivateUsers": "CAP_PERFMON must count in the host user namespace",
        "SystemCallFilter_debug": "perf_event_open",
        "SystemCallFilter_resources": "vCPU threads may set their affinity and scheduling",
        "ProcSubset": "the kvm backend may read /proc/cpuinfo",
    },
}
# Overall exposure ceilings (0 = fully locked down, 10 = unprotected); with systemd 252 the
# units score 1.1 (server, agent) and 0.9 (shim).
CEILING = {"fleetpmu-server.service": 1.5, "fleetpmu-agent.service": 1.5,
           "fleetpmu-shim.service": 1.5}


def read_unit(path):
    """{section: {key: [values]}} of a unit file."""
    unit, section = {}, None
    for raw in open(path):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def values(unit, section, key):
    """Every value of a key, space-separated lists split, in order."""
    out = []
    for v in unit.get(section, {}).get(key, []):
        out.extend(v.split())
    return out


def main():
    parser = deploy_lib.common_args(__doc__)
    parser.add_argument("--configs", required=True,
                        help="comma-separated NAME=SOURCE: the configs the packages install in "
                             "/etc/fleetpmu and where they come from")
    args = parser.parse_args()
    programs = args.programs.split(",")
    configs = dict(item.split("=", 1) for item in args.configs.split(","))
    args.src = os.path.abspath(args.src)
    problems = deploy_lib.Problems("deploy.systemd_units")
    unit_dir = os.path.join(args.src, "deploy", "systemd")

    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(unit_dir, "*")))
    problems.check(found == sorted(UNITS), f"deploy/systemd holds {found}, expected {sorted(UNITS)}")

    units, effective, kinds = {}, {}, {}
    tmp = tempfile.mkdtemp(prefix="fleetpmu-units-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for name in UNITS:
        path = os.path.join(unit_dir, name)
        if not os.path.exists(path):
            continue
        unit = read_unit(path)
        units[name] = unit
        exec_start = unit.get("Service", {}).get("ExecStart", [])
        if not problems.check(len(exec_start) == 1, f"{name}: one ExecStart expected, got {exec_start}"):
            continue
        argv = shlex.split(exec_start[0])
        program = deploy_lib.program_of(argv, programs, args.bin, problems, f"{name} ExecStart")
        config_path = deploy_lib.config_arg(argv[1:], problems, f"{name} ExecStart")
        if program and config_path:
            config_name = os.path.basename(config_path)
            if problems.check(os.path.dirname(config_path) == "/etc/fleetpmu" and config_name in configs,
                              f"{name}: --config {config_path} is not a config the packages install "
                              f"in /etc/fleetpmu ({', '.join(sorted(configs))})"):
                try:
                    effective[name], _ = deploy_lib.effective_config(args.bin, program, configs[config_name])
                    kinds[name] = deploy_lib.DAEMONS[program]
                    problems.check(True, f"{name}: {program} accepts {configs[config_name]}")
                except ValueError as e:
                    problems.fail(f"{name}: {e}")
        # The copy verify reads: ExecStart runs the built program, nothing else changes.
        text = open(path).read()
        if program:
            text = text.replace(argv[0], os.path.join(os.path.abspath(args.bin), program), 1)
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)

    # --- systemd-analyze verify: exit status and every line about our units.
    copies = [os.path.join(tmp, n) for n in UNITS if os.path.exists(os.path.join(tmp, n))]
    result = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True, text=True)
    complaints = [l for l in (result.stdout + result.stderr).splitlines() if "fleetpmu" in l]
    problems.check(result.returncode == 0 and not complaints,
                   f"systemd-analyze verify (exit {result.returncode}):\n  " + "\n  ".join(complaints))

    # --- Dependencies on fleetpmu units name units that exist.
    for name, unit in units.items():
        for key in ("Wants", "Requires", "BindsTo", "After", "Before", "PartOf"):
            for dep in values(unit, "Unit", key):
                if dep.startswith("fleetpmu"):
                    problems.check(dep in UNITS, f"{name}: {key}={dep} names no unit in deploy/systemd")

    # --- Hardening: allowed exposures only, score under the ceiling.
    for name in UNITS:
        copy = os.path.join(tmp, name)
        if not os.path.exists(copy):
            continue
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--json=short", copy],
                                capture_output=True, text=True)
        if not problems.check(result.returncode == 0, f"{name}: systemd-analyze security: {result.stderr}"):
            continue
        exposed = sorted(i["json_field"] for i in json.loads(result.stdout) if i["set"] is False)
        unexpected = [e for e in exposed if e not in ALLOWED_EXPOSURE[name]]
        problems.check(not unexpected, f"{name}: hardening regressed, now exposed: {', '.join(unexpected)}")
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", copy],
                                capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        if problems.check(m is not None, f"{name}: no overall exposure level in:\n{result.stdout[-500:]}"):
            score = float(m.group(1))
            print(f"{name}: exposure {score} (ceiling {CEILING[name]})")
            problems.check(score <= CEILING[name], f"{name}: exposure {score} > ceiling {CEILING[name]}")

    # --- Each unit agrees with the config it runs.
    for name, unit in units.items():
        svc = unit.get("Service", {})
        problems.check(svc.get("Type") == ["simple"], f"{name}: Type={svc.get('Type')}: the programs do not sd_notify")
        problems.check(svc.get("Restart") == ["on-failure"], f"{name}: Restart={svc.get('Restart')}")
        problems.check(svc.get("User") == ["fleetpmu"], f"{name}: User={svc.get('User')}, the packages make `fleetpmu`")
        if name not in effective:
            continue
        config, kind = effective[name], kinds[name]
        writable = ([f"/var/lib/{d}" for d in values(unit, "Service", "StateDirectory")]
                    + [f"/run/{d}" for d in values(unit, "Service", "RuntimeDirectory")]
                    + values(unit, "Service", "ReadWritePaths"))
        for directory in deploy_lib.writable_paths(kind, config):
            problems.check(any(deploy_lib.under(directory, w) for w in writable),
                           f"{name}: writes to {directory} (its config), but ProtectSystem=strict leaves "
                           f"only {writable} writable")

    agent, shim = effective.get("fleetpmu-agent.service"), effective.get("fleetpmu-shim.service")
    if agent and shim:
        socket = deploy_lib.field(agent, "shim_socket")
        problems.check(deploy_lib.field(shim, "agent_socket") == socket,
                       f"the shim sends to {deploy_lib.field(shim, 'agent_socket')}, the agent listens on {socket}")
        problems.check(units["fleetpmu-agent.service"]["Service"].get("User")
                       == units["fleetpmu-shim.service"]["Service"].get("User"),
                       "agent and shim must share a user: the socket is 0660")
        # The socket's directory must belong to the agent alone: systemd removes a unit's
        # RuntimeDirectory when that unit stops.
        socket_dir = os.path.dirname(socket)
        for name, unit in units.items():
            owns = any(f"/run/{d}" == socket_dir for d in values(unit, "Service", "RuntimeDirectory"))
            problems.check(owns == (name == "fleetpmu-agent.service"),
                           f"{name}: {'declares' if owns else 'does not declare'} RuntimeDirectory for "
                           f"{socket_dir}; only fleetpmu-agent.service may")
        shim_unit = units["fleetpmu-shim.service"]
        for key in ("Wants", "After"):
            problems.check("fleetpmu-agent.service" in values(shim_unit, "Unit", key),
                           f"fleetpmu-shim.service: {key}=fleetpmu-agent.service missing (the agent makes the socket)")

    # /dev/kvm: the shim alone, for the kvm device its kvm configs name.
    for name, unit in units.items():
        allowed = values(unit, "Service", "DeviceAllow")
        if name == "fleetpmu-shim.service":
            shim_configs = [os.path.join(args.src, "deploy", "examples", "shim-kvm.textproto")]
            for path in shim_configs:
                try:
                    config, _ = deploy_lib.effective_config(args.bin, "fleetpmu-shim", path)
                except ValueError as e:
                    problems.fail(str(e))
                    continue
                device = deploy_lib.field(config, "kvm.kvm_device", "/dev/kvm")
                problems.check(device in allowed, f"{name}: DeviceAllow={allowed} lacks {device} ({path})")
            problems.check(values(unit, "Service", "DevicePolicy") == ["closed"],
                           f"{name}: DevicePolicy=closed, so that /dev/kvm is the only device")
        else:
            problems.check(not allowed and values(unit, "Service", "PrivateDevices") == ["yes"],
                           f"{name}: only the shim may have devices (DESIGN.md \"Security\")")

    problems.finish()


if __name__ == "__main__":
    main()
