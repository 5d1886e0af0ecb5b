"""The Grafana dashboards under dashboards/grafana as the tests see them: their structure rules,
their variables and every panel query with the variables substituted.

Shared by dashboard_json_test.py (structure, promtool parse) and dashboard_live_test.py (every
query against a Prometheus that scraped a real server). Standard library only.
"""
import glob
import json
import os
import re

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The annotation every dashboard carries reads Grafana itself, not Prometheus.
GRAFANA_ANNOTATIONS = {"type": "grafana", "uid": "-- Grafana --"}
# Grafana's own variables, as the tests substitute them: a rate window of several 1s scrapes,
# and a range that covers the whole of a short test.
BUILTINS = {"__rate_interval": "30s", "__interval": "15s", "__range": "1m", "__range_s": "60"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


class Query:
    """One panel target: where it is (for messages) and its PromQL."""

    def __init__(self, dashboard, panel, ref_id, expr):
        self.dashboard = dashboard
        self.panel = panel
        self.ref_id = ref_id
        self.expr = expr

    def where(self):
        return f'{self.dashboard}: panel "{self.panel}" query {self.ref_id}'


def load(source_dir):
    """{file name: dashboard dict} for every dashboards/grafana/*.json; JSON errors raise."""
    paths = sorted(glob.glob(os.path.join(source_dir, "dashboards", "grafana", "*.json")))
    dashboards = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            dashboards[os.path.basename(path)] = json.load(f)
    return dashboards


def panels(dashboard):
    """Every panel, rows' nested panels included (a collapsed row holds its panels)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard):
    return dashboard.get("templating", {}).get("list", [])


def variable_query(variable):
    """The PromQL query text of a `query` variable (Grafana stores a string or an object)."""
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else (query or "")


def parse_label_values(text):
    """label_values(SELECTOR, LABEL) -> (SELECTOR or None, LABEL); None if not that form."""
    match = _LABEL_VALUES.match(text)
    return (match.group(1), match.group(2)) if match else None


def queries(name, dashboard):
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield Query(name, panel.get("title", f"id {panel.get('id')}"), target.get("refId"),
                        target.get("expr", ""))


def referenced_variables(text):
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(text, values):
    """Replaces $v, ${v}, ${v:format} and [[v]] from `values` and BUILTINS; unknown names stay."""
    def one(match):
        name = next(g for g in match.groups() if g)
        if name in values:
            return values[name]
        return BUILTINS.get(name, match.group(0))
    return _VARIABLE.sub(one, text)


def structure_problems(name, dashboard):
    """What breaks the rules every fleetpmu dashboard follows, as messages naming the spot."""
    problems = []
    add = lambda what: problems.append(f"{name}: {what}")
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        add(f"uid {uid!r} is not 1..40 characters of [A-Za-z0-9_-]")
    if not dashboard.get("title"):
        add("no title")
    if dashboard.get("schemaVersion") != SCHEMA_VERSION:
        add(f"schemaVersion {dashboard.get('schemaVersion')!r}, want {SCHEMA_VERSION}")
    if dashboard.get("id") is not None:
        add("carries a database id (provisioned dashboards must not)")

    declared = {v.get("name") for v in variables(dashboard)}
    datasource_vars = [v for v in variables(dashboard) if v.get("name") == "datasource"]
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus"
               for v in datasource_vars):
        add("no variable `datasource` of type datasource with query prometheus")
    for v in variables(dashboard):
        if v.get("type") == "query":
            if v.get("datasource") != DATASOURCE:
                add(f"variable {v.get('name')}: datasource {v.get('datasource')!r}, want {DATASOURCE}")
            if parse_label_values(variable_query(v)) is None:
                add(f"variable {v.get('name')}: query {variable_query(v)!r} is not label_values(...)")

    ids = [p.get("id") for p in panels(dashboard)]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        add(f"panel id {duplicate} used more than once")
    for panel in panels(dashboard):
        title = panel.get("title", f"id {panel.get('id')}")
        if not isinstance(panel.get("id"), int):
            add(f'panel "{title}": id {panel.get("id")!r} is not an integer')
        pos = panel.get("gridPos")
        if not (isinstance(pos, dict) and all(isinstance(pos.get(k), int) for k in "hwxy")):
            add(f'panel "{title}": gridPos {pos!r} lacks integer h, w, x, y')
        elif pos["x"] < 0 or pos["w"] < 1 or pos["x"] + pos["w"] > 24:
            add(f'panel "{title}": gridPos x={pos["x"]} w={pos["w"]} leaves the 24-column grid')
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            add(f'panel "{title}": datasource {panel.get("datasource")!r}, want {DATASOURCE}')
        targets = panel.get("targets", [])
        if not targets:
            add(f'panel "{title}": no queries')
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids):
            add(f'panel "{title}": refIds {ref_ids} repeat')
        for target in targets:
            if target.get("datasource") != DATASOURCE:
                add(f'panel "{title}" query {target.get("refId")}: datasource '
                    f'{target.get("datasource")!r}, want {DATASOURCE}')
            if not target.get("expr", "").strip():
                add(f'panel "{title}" query {target.get("refId")}: empty expr')
            unknown = referenced_variables(target.get("expr", "")) - declared - set(BUILTINS)
            if unknown:
                add(f'panel "{title}" query {target.get("refId")}: undefined variables {sorted(unknown)}')

    # A data source named outside the panels and variables (annotations, links) must be the
    # variable or Grafana's own: a fixed uid breaks on every other Grafana.
    def walk(node, path):
        if isinstance(node, dict):
            ds = node.get("datasource")
            if ds is not None and ds not in (DATASOURCE, GRAFANA_ANNOTATIONS):
                add(f"{path}: datasource {ds!r} is neither ${{datasource}} nor Grafana's own")
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
    for key in ("annotations", "links"):
        walk(dashboard.get(key), key)
    return problems
