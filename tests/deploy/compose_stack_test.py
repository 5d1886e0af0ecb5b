#!/usr/bin/env python3
"""deploy/compose: the compose file parses (and passes `docker compose config` where the compose
plugin is installed), every bind-mounted file exists, every fleetpmu container runs a program
the packages install with a config that program accepts, and the services agree with each
other: published ports and scrape targets are ports the configs listen on, the agent's server
address is the server's ingest port, agent and shim share the socket's volume, Prometheus'
rule files are the repository's alert rules (`promtool check config` on the config with the
mounts resolved), Alertmanager's config passes `amtool check-config`, and Grafana's provisioned
data source and dashboards are the stack's Prometheus and the repository's JSON.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    sys.exit("python3 has no yaml module: install python3-yaml (deploy/install-deps.sh)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib  # noqa: E402

SERVICE_KEYS = {"image", "build", "command", "entrypoint", "user", "read_only", "cap_drop",
                "cap_add", "security_opt", "tmpfs", "restart", "volumes", "ports", "depends_on",
                "environment", "healthcheck", "networks", "profiles", "pull_policy"}
TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}


def flag(command, name):
    """The value of --name=V or --name V in a command list."""
    for i, a in enumerate(command or []):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(command):
            return command[i + 1]
    return None


class Service:
    def __init__(self, name, spec, compose_dir):
        self.name, self.spec = name, spec
        self.mounts = []  # (source or volume name, target, kind, read_only)
        for v in spec.get("volumes", []):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            if source.startswith((".", "/")):
                self.mounts.append((os.path.normpath(os.path.join(compose_dir, source)), target, "bind", read_only))
            else:
                self.mounts.append((source, target, "volume", read_only))
        for t in spec.get("tmpfs", []):
            self.mounts.append((None, t, "tmpfs", False))
        self.program = self.kind = self.config = None
        self.listen = {}  # port -> host

    def mount_of(self, path):
        best = None
        for m in self.mounts:
            if deploy_lib.under(path, m[1]) and (best is None or len(m[1]) > len(best[1])):
                best = m
        return best

    def host_path(self, path):
        """Where a path inside the container comes from on this machine (bind mounts)."""
        m = self.mount_of(path)
        if m is None or m[2] != "bind":
            return None
        return os.path.join(m[0], os.path.relpath(path, m[1])) if path != m[1] else m[0]


def main():
    args = deploy_lib.common_args(__doc__).parse_args()
    programs = args.programs.split(",")
    problems = deploy_lib.Problems("deploy.compose")
    args.src = os.path.abspath(args.src)
    compose_dir = os.path.join(args.src, "deploy", "compose")
    compose_file = os.path.join(compose_dir, "compose.yaml")
    compose = yaml.safe_load(open(compose_file))

    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if plugin:
        result = subprocess.run([docker, "compose", "-f", compose_file, "config", "-q"], capture_output=True, text=True)
        problems.check(result.returncode == 0, f"docker compose config: {result.stderr}")
    else:
        print("docker compose is not installed: compose.yaml is checked by this test alone")

    extra = {k for k in compose if not k.startswith("x-")} - TOP_KEYS
    problems.check(not extra, f"compose.yaml: unknown top-level keys {extra}")
    named_volumes = set(compose.get("volumes") or {})
    services = {n: Service(n, s, compose_dir) for n, s in compose["services"].items()}

    for s in services.values():
        where = f"service {s.name}"
        problems.check(set(s.spec) <= SERVICE_KEYS, f"{where}: unknown keys {set(s.spec) - SERVICE_KEYS}")
        for dep in s.spec.get("depends_on", []):
            problems.check(dep in services, f"{where}: depends on {dep}, which is no service")
        for source, target, kind, _ in s.mounts:
            if kind == "bind":
                problems.check(os.path.exists(source), f"{where}: mounts {os.path.relpath(source, args.src)}, which does not exist")
            elif kind == "volume":
                problems.check(source in named_volumes, f"{where}: volume {source} is not declared")
        command = s.spec.get("command")
        if not (command and command[0].startswith("/usr/bin/fleetpmu")):
            continue
        check_fleetpmu_service(s, args, programs, problems)

    check_build(services, args, problems)
    check_references(services, args, problems)
    prometheus = check_prometheus(services, args, problems)
    check_alertmanager(services, problems)
    check_grafana(services, prometheus, problems)
    problems.finish()


def check_fleetpmu_service(s, args, programs, problems):
    where = f"service {s.name}"
    spec = s.spec
    s.program = deploy_lib.program_of(spec["command"], programs, args.bin, problems, where)
    problems.check(spec.get("read_only") is True, f"{where}: read_only: true")
    problems.check(spec.get("cap_drop") == ["ALL"], f"{where}: cap_drop: [ALL]")
    problems.check(not spec.get("cap_add"), f"{where}: adds capabilities")
    problems.check("no-new-privileges:true" in spec.get("security_opt", []), f"{where}: no-new-privileges")
    user = str(spec.get("user", "root")).split(":")[0]
    problems.check(user not in ("", "0", "root"), f"{where}: runs as root")
    if s.program not in deploy_lib.DAEMONS:
        return
    s.kind = deploy_lib.DAEMONS[s.program]
    config_path = deploy_lib.config_arg(spec["command"][1:], problems, where)
    source = s.host_path(config_path) if config_path else None
    if not problems.check(source and os.path.isfile(source), f"{where}: --config {config_path} is not a mounted file"):
        return
    try:
        s.config, note = deploy_lib.effective_config(args.bin, s.program, source)
        problems.check(True, f"{s.program} accepts {source}")
        if note:
            print(f"{where}: {note}")
    except ValueError as e:
        problems.fail(f"{where}: {e}")
        return
    for path in deploy_lib.tls_files(s.kind, s.config):
        problems.check(s.mount_of(path) is not None, f"{where}: {path} (its config) is on no mount")
    for directory in deploy_lib.writable_paths(s.kind, s.config):
        m = s.mount_of(directory)
        problems.check(m is not None and not m[3],
                       f"{where}: writes to {directory} (its config), which is on no writable mount (read_only)")
    for address in deploy_lib.listen_addresses(s.kind, s.config).values():
        host, port = deploy_lib.split_host_port(address)
        s.listen[port] = host


def published(spec):
    """(host ip, host port, container port) of each published port."""
    out = []
    for p in spec.get("ports", []):
        parts = str(p).split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((ip, int(parts[-2]), int(parts[-1])))
    return out


def check_build(services, args, problems):
    for s in services.values():
        build = s.spec.get("build")
        if not build:
            continue
        # cpack writes the .debs to build/packages (CPACK_PACKAGE_DIRECTORY of the default
        # preset's build tree); the Dockerfile path is resolved from the context.
        context = os.path.normpath(os.path.join(args.src, "deploy", "compose", build["context"]))
        problems.check(context == os.path.join(args.src, "build", "packages"),
                       f"service {s.name}: build context {build['context']} is not build/packages")
        dockerfile = os.path.normpath(os.path.join(context, build.get("dockerfile", "Dockerfile")))
        problems.check(os.path.isfile(dockerfile), f"service {s.name}: Dockerfile {dockerfile} missing")


def third_party_ports(s):
    """Listen ports of the stack's other services, from their own flags."""
    command = s.spec.get("command") or []
    address = flag(command, "web.listen-address")
    if address:
        return {int(address.rsplit(":", 1)[1]): "0.0.0.0"}
    env = s.spec.get("environment") or {}
    if "GF_SERVER_HTTP_PORT" in env:
        return {int(env["GF_SERVER_HTTP_PORT"]): "0.0.0.0"}
    return {}


def check_references(services, args, problems):
    for s in services.values():
        if not s.kind:
            s.listen = third_party_ports(s)
    for s in services.values():
        for ip, host_port, port in published(s.spec):
            # A local stack: nothing is published beyond this machine.
            problems.check(deploy_lib.is_loopback(ip), f"service {s.name}: publishes {host_port} on {ip}, not 127.0.0.1")
            problems.check(port in s.listen and not deploy_lib.is_loopback(s.listen[port]),
                           f"service {s.name}: publishes container port {port}, where nothing listens reachably "
                           f"(listening: {s.listen})")
    agents = [s for s in services.values() if s.kind == "agent" and s.config]
    shims = [s for s in services.values() if s.kind == "shim" and s.config]
    for a in agents:
        host, port = deploy_lib.split_host_port(deploy_lib.field(a.config, "server_address"))
        server = services.get(host)
        ok = server is not None and server.kind == "server" and server.config is not None
        if problems.check(ok, f"service {a.name}: server_address {host}:{port} is not the server service"):
            ingest = deploy_lib.split_host_port(deploy_lib.field(server.config, "ingest_listen"))
            problems.check(ingest[1] == port and not deploy_lib.is_loopback(ingest[0]),
                           f"service {a.name}: sends to port {port}, the server's ingest_listen is {ingest}")
    for sh in shims:
        socket = deploy_lib.field(sh.config, "agent_socket")
        agent = next((a for a in agents if deploy_lib.field(a.config, "shim_socket") == socket), None)
        if problems.check(agent, f"service {sh.name}: sends to {socket}, where no agent listens"):
            ma, ms = agent.mount_of(socket), sh.mount_of(socket)
            problems.check(ma and ms and ma[2] == "volume" and ma[0] == ms[0],
                           f"services {agent.name} and {sh.name} do not share the volume of {socket}")


def target_service(services, scraper, target, problems, job):
    host, port = deploy_lib.split_host_port(target)
    s = scraper if host == "localhost" else services.get(host)
    if not problems.check(s is not None, f"{job}: target {target} is no service"):
        return None
    problems.check(port in s.listen and not deploy_lib.is_loopback(s.listen[port]),
                   f"{job}: target {target}, but {s.name} listens on {s.listen}")
    return s, port


def check_prometheus(services, args, problems):
    prom = next((s for s in services.values() if "prom/prometheus" in str(s.spec.get("image"))), None)
    if not problems.check(prom, "no prometheus service"):
        return None
    config_path = prom.host_path(flag(prom.spec.get("command"), "config.file") or "/etc/prometheus/prometheus.yml")
    if not problems.check(config_path and os.path.isfile(config_path), "prometheus: its config file is not mounted"):
        return None
    config = yaml.safe_load(open(config_path))
    # rule_files name paths in the container: resolve them through the mounts.
    rules = []
    for pattern in config.get("rule_files", []):
        host = prom.host_path(pattern)
        matched = sorted(glob.glob(host)) if host else []
        problems.check(matched, f"prometheus: rule_files {pattern} matches no file of the repository")
        rules += matched
    problems.check(any(r.endswith(os.path.join("dashboards", "alerts", "fleetpmu.rules.yml")) for r in rules),
                   "prometheus: the fleetpmu alert rules (dashboards/alerts/fleetpmu.rules.yml) are not loaded")
    scraped = set()
    for job in config.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for target in sc.get("targets", []):
                found = target_service(services, prom, target, problems, f"scrape job {job['job_name']}")
                if found and found[0].kind:
                    s, port = found
                    metrics = deploy_lib.split_host_port(deploy_lib.field(s.config, "metrics_listen"))[1]
                    problems.check(port == metrics, f"scrape job {job['job_name']}: {target} is not {s.name}'s metrics_listen")
                    scraped.add(s.name)
    for s in services.values():
        if s.kind in ("server", "agent"):
            problems.check(s.name in scraped, f"prometheus scrapes no /metrics of service {s.name}")
    for am in config.get("alerting", {}).get("alertmanagers", []):
        for sc in am.get("static_configs", []):
            for target in sc.get("targets", []):
                found = target_service(services, prom, target, problems, "alerting")
                if found:
                    problems.check("alertmanager" in str(found[0].spec.get("image")),
                                   f"alerting: {target} is not an Alertmanager")
    promtool = shutil.which("promtool")
    if problems.check(promtool, "promtool missing (Debian package prometheus, deploy/install-deps.sh)"):
        with tempfile.TemporaryDirectory() as tmp:
            resolved = dict(config, rule_files=rules)
            path = os.path.join(tmp, "prometheus.yml")
            with open(path, "w") as f:
                yaml.safe_dump(resolved, f)
            result = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True)
            problems.check(result.returncode == 0, f"promtool check config: {result.stdout}{result.stderr}")
    return config


def check_alertmanager(services, problems):
    am = next((s for s in services.values() if "alertmanager" in str(s.spec.get("image"))), None)
    if not problems.check(am, "no alertmanager service"):
        return
    path = am.host_path(flag(am.spec.get("command"), "config.file") or "/etc/alertmanager/alertmanager.yml")
    if not problems.check(path and os.path.isfile(path), "alertmanager: its config file is not mounted"):
        return
    amtool = shutil.which("amtool")
    if problems.check(amtool, "amtool missing (Debian package prometheus-alertmanager, deploy/install-deps.sh)"):
        result = subprocess.run([amtool, "check-config", path], capture_output=True, text=True)
        problems.check(result.returncode == 0, f"amtool check-config: {result.stdout}{result.stderr}")


def check_grafana(services, prometheus, problems):
    grafana = next((s for s in services.values() if "grafana" in str(s.spec.get("image"))), None)
    if not problems.check(grafana, "no grafana service"):
        return
    datasources = grafana.host_path("/etc/grafana/provisioning/datasources")
    dashboards = grafana.host_path("/etc/grafana/provisioning/dashboards")
    for name, d in (("datasources", datasources), ("dashboards", dashboards)):
        problems.check(d and glob.glob(os.path.join(d, "*.y*ml")), f"grafana: no {name} provisioning mounted")
    for path in glob.glob(os.path.join(datasources or "/nonexistent", "*.y*ml")):
        for ds in (yaml.safe_load(open(path)) or {}).get("datasources", []):
            if ds.get("type") != "prometheus":
                continue
            m = re.fullmatch(r"https?://([^/:]+):(\d+)/?", ds.get("url", ""))
            if not problems.check(m, f"{path}: data source url {ds.get('url')} is not http://host:port"):
                continue
            found = target_service(services, grafana, f"{m.group(1)}:{m.group(2)}", problems, f"data source {ds.get('name')}")
            if found:
                problems.check("prom/prometheus" in str(found[0].spec.get("image")),
                               f"data source {ds.get('name')}: {ds['url']} is not the stack's Prometheus")
            interval = ds.get("jsonData", {}).get("timeInterval")
            if interval and prometheus:
                problems.check(interval == prometheus.get("global", {}).get("scrape_interval"),
                               f"data source {ds.get('name')}: timeInterval {interval} is not Prometheus' scrape_interval")
    for path in glob.glob(os.path.join(dashboards or "/nonexistent", "*.y*ml")):
        for provider in (yaml.safe_load(open(path)) or {}).get("providers", []):
            target = provider.get("options", {}).get("path")
            host = grafana.host_path(target) if target else None
            files = sorted(glob.glob(os.path.join(host, "*.json"))) if host else []
            if problems.check(files, f"{path}: provider {provider.get('name')} path {target} holds no dashboard JSON"):
                for f in files:
                    try:
                        json.load(open(f))
                        problems.check(True, f)
                    except ValueError as e:
                        problems.fail(f"{f}: {e}")


if __name__ == "__main__":
    main()
