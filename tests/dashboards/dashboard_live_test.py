#!/usr/bin/env python3
"""Every Grafana panel query returns data from a real Prometheus that scraped a real fleet.

Real processes on loopback: fleetpmu-server, fleetpmu-agent and the sim shim running
deploy/examples/sim-host-seed-v5.textproto in real time (tenant initech on seed-v5 loses
overflows; a 16-entry telemetry ring makes the shim drop records), and /usr/bin/prometheus
scraping the server's and the agent's /metrics every second with dashboards/alerts loaded.
Once every series the dashboards read has a few samples:
  - each variable query (label_values) answers at least one value;
  - each panel query, with $__rate_interval=30s, $__range=1m, `All` as `.*` and the dashboard's
    single-value variables set to values the variable queries answered, returns at least one
    sample that is a number (not NaN). A dashboard passes if one choice of values fills every
    panel (for the tenant dashboard: the tenant that loses overflows);
  - every metric an alert rule reads is one the server or the agent exports;
  - FleetpmuOverflowsLost fires in that Prometheus for initech on the host, and for no tenant on
    the reviewed policy.
Usage: dashboard_live_test.py <source dir> <fleetpmu-server> <fleetpmu-agent> <fleetpmu-shim>
       <prometheus>
"""
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grafana_dashboards as gd  # noqa: E402

HOST = "dash-host"
LOSING_TENANT = "initech"        # on seed-v5 in the example config
REVIEWED_TENANTS = {"acme", "globex"}
SAMPLES_BEFORE_QUERYING = 4      # rate() over 30s needs two; a few more ride out a slow scrape
WAIT_SECONDS = 40                # for a process or an alert; a healthy run needs a few seconds
SAMPLE_WAIT_SECONDS = 20         # for the scrapes: a series still missing then is a failure


class Failure(Exception):
    pass


def free_ports(count):
    """Ports the kernel just handed out; they stay free long enough on a loopback-only test."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for(what, check, seconds=WAIT_SECONDS):
    """Polls check() until it returns a true value (returned), or fails naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError):
            pass  # not listening yet, or an answer not complete yet
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def http_get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, **params):
        answer = json.loads(http_get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"))
        if answer.get("status") != "success":
            raise Failure(f"/api/v1/{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr):
        """An instant query; the result as a list of {metric, value}."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def label_values(self, selector, label):
        """What Grafana's label_values(selector, label) answers."""
        if selector is None:
            return sorted(self.api(f"label/{label}/values"))
        series = self.api("series", **{"match[]": selector})
        return sorted({s[label] for s in series if s.get(label)})


def has_number(result):
    return any(not math.isnan(float(r["value"][1])) for r in result)


def check_dashboard(prom, name, dashboard):
    """Failure messages for the dashboard under its best choice of variable values."""
    failures = []
    values = {}
    choices = {}
    for v in gd.variables(dashboard):
        if v.get("type") != "query":
            continue
        selector, label = gd.parse_label_values(gd.variable_query(v))
        if selector is not None:
            selector = gd.substitute(selector, values)
        answered = prom.label_values(selector, label)
        if not answered:
            failures.append(f"{name}: variable {v['name']}: {gd.variable_query(v)} answers nothing")
            continue
        if v.get("includeAll"):
            values[v["name"]] = v.get("allValue", ".*")
        else:
            choices[v["name"]] = answered
            values[v["name"]] = answered[0]  # for the variables that depend on this one
    if failures:
        return failures

    best = None
    names = sorted(choices)
    for combination in itertools.product(*(choices[n] for n in names)):
        values.update(zip(names, combination))
        empty = []
        for q in gd.queries(name, dashboard):
            expr = gd.substitute(q.expr, values)
            if not has_number(prom.query(expr)):
                empty.append(f"{q.where()} returns no data: {expr}")
        chosen = ", ".join(f"${n}={values[n]}" for n in names) or "no variables"
        if not empty:
            print(f"{name}: every panel query returns data ({chosen})")
            return []
        if best is None or len(empty) < len(best[1]):
            best = (chosen, empty)
    return [f"{line} (with {best[0]})" for line in best[1]]


def rule_metric_names(prom):
    names = set()
    for group in prom.api("rules")["groups"]:
        for rule in group["rules"]:
            names |= set(re.findall(r"\bfleetpmu_\w+", rule["query"]))
    return names


def overflow_alerts(prom):
    return [a["labels"] for a in prom.api("alerts")["alerts"]
            if a["labels"].get("alertname") == "FleetpmuOverflowsLost" and a["state"] == "firing"]


def run(source_dir, server_bin, agent_bin, shim_bin, prometheus_bin, work, processes):
    ingest, query, server_metrics, agent_metrics, prom_port = free_ports(5)

    def start(name, argv):
        with open(os.path.join(work, f"{name}.log"), "w") as log:  # the child keeps its own copy
            processes.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)))

    def write(name, text):
        path = os.path.join(work, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    server_config = write("server.textproto", f"""
ingest_listen: "127.0.0.1:{ingest}"
query_listen: "127.0.0.1:{query}"
metrics_listen: "127.0.0.1:{server_metrics}"
storage {{ sqlite_path: "{work}/server.db" }}
allow_plaintext: true
""")
    agent_config = write("agent.textproto", f"""
host_id: "{HOST}"
shim_socket: "{work}/shim.sock"
spool_path: "{work}/spool.db"
server_address: "127.0.0.1:{ingest}"
allow_plaintext: true
metrics_listen: "127.0.0.1:{agent_metrics}"
backoff_min {{ nanos: 50000000 }}
backoff_max {{ seconds: 1 }}
""")
    # The example host in real time (speed 1, as deployed) with a report every second, so that
    # counters move between scrapes; a 16-entry ring so that the shim drops records.
    with open(os.path.join(source_dir, "deploy/examples/sim-host-seed-v5.textproto"), encoding="utf-8") as f:
        shim_text = f.read()
    if "  speed: 1\n" not in shim_text:
        raise Failure("deploy/examples/sim-host-seed-v5.textproto no longer runs in real time (speed: 1)")
    replacements = [('agent_socket: "/run/fleetpmu/shim.sock"', f'agent_socket: "{work}/shim.sock"'),
                    ("report_interval { seconds: 10 }", "report_interval { seconds: 1 }\ntelemetry_ring_capacity: 16")]
    for old, new in replacements:
        if old not in shim_text:
            raise Failure(f"deploy/examples/sim-host-seed-v5.textproto no longer has {old!r}")
        shim_text = shim_text.replace(old, new)
    shim_config = write("shim.textproto", shim_text)
    prometheus_config = write("prometheus.yml", json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(source_dir, "dashboards/alerts/*.yml")],
        "scrape_configs": [
            {"job_name": "fleetpmu-server", "static_configs": [{"targets": [f"127.0.0.1:{server_metrics}"]}]},
            {"job_name": "fleetpmu-agent", "static_configs": [{"targets": [f"127.0.0.1:{agent_metrics}"]}]},
        ]}))

    start("server", [server_bin, "--config", server_config])
    wait_for("fleetpmu-server's /metrics", lambda: http_get(f"http://127.0.0.1:{server_metrics}/metrics"))
    start("agent", [agent_bin, "--config", agent_config])
    wait_for("the agent's shim socket", lambda: os.path.exists(os.path.join(work, "shim.sock")))
    start("shim", [shim_bin, "--config", shim_config])
    start("prometheus", [prometheus_bin, f"--config.file={prometheus_config}",
                         f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"])
    prom = Prometheus(prom_port)
    wait_for("Prometheus to be ready", lambda: http_get(f"{prom.base}/-/ready"))

    dashboards = gd.load(source_dir)
    metric_names = set()
    for name, dashboard in dashboards.items():
        for q in gd.queries(name, dashboard):
            metric_names |= set(re.findall(r"\bfleetpmu_\w+", q.expr))

    missing = sorted(metric_names)

    def sampled():
        missing[:] = [m for m in missing
                      if not prom.query(f"max(count_over_time({m}[1m])) >= {SAMPLES_BEFORE_QUERYING}")]
        return not missing
    try:
        wait_for(f"{SAMPLES_BEFORE_QUERYING} scrapes of every series the dashboards read", sampled,
                 SAMPLE_WAIT_SECONDS)
    except Failure:
        # Evaluate anyway: the panels reading the missing series are named below.
        print(f"never scraped {SAMPLES_BEFORE_QUERYING} times: {missing}")

    failures = []
    for name, dashboard in dashboards.items():
        failures += check_dashboard(prom, name, dashboard)

    rule_names = rule_metric_names(prom)
    if not rule_names:
        failures.append("Prometheus loaded no alert rule from dashboards/alerts")
    for metric in sorted(rule_names):
        if not prom.query(f"count({metric})"):
            failures.append(f"alert rules read {metric}, which neither the server nor the agent exports")

    def losing_tenant_paged():
        alerts = overflow_alerts(prom)
        paged = any(a.get("tenant") == LOSING_TENANT and a.get("host") == HOST for a in alerts)
        return alerts if paged else None
    try:
        alerts = wait_for(f"FleetpmuOverflowsLost to fire for tenant {LOSING_TENANT} on {HOST}",
                          losing_tenant_paged)
        print("FleetpmuOverflowsLost firing for:",
              sorted((a.get("tenant", "(host counters)"), a["host"]) for a in alerts))
        for a in alerts:
            if a.get("tenant") in REVIEWED_TENANTS:
                failures.append(f"FleetpmuOverflowsLost fires for {a['tenant']}, whose policy loses nothing")
    except Failure as e:
        failures.append(str(e))
    return failures


def main():
    source_dir, server_bin, agent_bin, shim_bin, prometheus_bin = sys.argv[1:6]
    work = tempfile.mkdtemp(prefix="fleetpmu-dashboards-")
    processes = []
    started = time.monotonic()
    try:
        failures = run(source_dir, server_bin, agent_bin, shim_bin, prometheus_bin, work, processes)
    except Failure as e:
        failures = [str(e)]
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if failures:
        for failure in failures:
            print("FAIL:", failure)
        for name, _ in processes:
            with open(os.path.join(work, f"{name}.log"), encoding="utf-8", errors="replace") as f:
                print(f"--- {name}.log (last lines)\n" + "".join(f.readlines()[-8:]))
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'FAIL' if failures else 'PASS'} in {time.monotonic() - started:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
