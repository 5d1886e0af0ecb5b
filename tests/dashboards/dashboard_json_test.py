#!/usr/bin/env python3
"""Every Grafana dashboard under dashboards/grafana follows the structure rules of
grafana_dashboards.structure_problems (uid, title, schemaVersion, a `datasource` variable used by
every panel and query, unique panel ids, gridPos), and every panel query and variable selector,
variables substituted, parses: promtool has no `check query`, so each one becomes a recording
rule in a temporary rules file for `promtool check rules`, in a group named after its panel.

Usage: dashboard_json_test.py <source dir> <promtool>
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grafana_dashboards as gd  # noqa: E402

EXPECTED_UIDS = {"fleetpmu-fleet", "fleetpmu-tenant", "fleetpmu-host"}


def parse_values(dashboard):
    """A value per variable that keeps the query parseable: the `All` regex where there is one."""
    values = {}
    for v in gd.variables(dashboard):
        values[v["name"]] = v.get("allValue", ".*") if v.get("includeAll") else "example"
    return values


def main():
    source_dir, promtool = sys.argv[1], sys.argv[2]
    dashboards = gd.load(source_dir)
    problems = []
    uids = [d.get("uid") for d in dashboards.values()]
    titles = [d.get("title") for d in dashboards.values()]
    if set(uids) != EXPECTED_UIDS:
        problems.append(f"dashboard uids {sorted(map(str, uids))}, want {sorted(EXPECTED_UIDS)}")
    for what, seen in (("uid", uids), ("title", titles)):
        for duplicate in {x for x in seen if seen.count(x) > 1}:
            problems.append(f"{what} {duplicate!r} used by more than one dashboard")
    for name, dashboard in dashboards.items():
        problems += gd.structure_problems(name, dashboard)

    groups = []
    for name, dashboard in dashboards.items():
        values = parse_values(dashboard)
        exprs = [(q.where(), q.expr) for q in gd.queries(name, dashboard)]
        for v in gd.variables(dashboard):
            selector = (gd.parse_label_values(gd.variable_query(v)) or (None, None))[0]
            if selector:
                exprs.append((f"{name}: variable {v['name']}", selector))
        for i, (where, expr) in enumerate(exprs):
            groups.append({"name": f"{where} (#{i})",
                           "rules": [{"record": "fleetpmu_dashboard:query",
                                      "expr": gd.substitute(expr, values)}]})
    print(f"{len(dashboards)} dashboards, {len(groups)} queries")
    with tempfile.TemporaryDirectory() as work:
        rules = os.path.join(work, "dashboard_queries.rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            json.dump({"groups": groups}, f, indent=1)  # JSON is YAML: no quoting to get wrong
        check = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
        if check.returncode != 0:
            problems.append("promtool cannot parse some queries (the group names the panel):\n"
                            + check.stdout + check.stderr)
    for problem in problems:
        print("FAIL:", problem)
    if not problems:
        print("PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
