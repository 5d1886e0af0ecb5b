#!/usr/bin/env python3
"""deploy/k8s: the kustomization renders (its resources and generated ConfigMaps, and with
`kubectl kustomize` when kubectl is installed), every container runs a program the packages
install with a config from a ConfigMap that this program accepts, and the manifests agree with
those configs: container ports and Services with the listen addresses, mounts with the files
and directories the daemons open, the agent's server address with the server's Service, the
shim socket shared by agent and shim, /dev/kvm for the kvm shim alone. prometheus-scrape.yml is
run against the rendered objects: its relabelling must keep exactly the metrics ports.
"""
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("python3 has no yaml module: install python3-yaml (deploy/install-deps.sh)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_lib  # noqa: E402

WORKLOADS = ("StatefulSet", "DaemonSet", "Deployment")
# Known keys, so that a misspelt one (volumeMount, readOnlyRootFileSystem) fails here instead of
# being dropped silently by the API server's pruning.
CONTAINER_KEYS = {"name", "image", "command", "args", "ports", "env", "envFrom", "resources",
                  "securityContext", "volumeMounts", "readinessProbe", "livenessProbe",
                  "startupProbe", "imagePullPolicy", "workingDir", "lifecycle"}
POD_KEYS = {"containers", "initContainers", "volumes", "nodeSelector", "affinity", "tolerations",
            "hostNetwork", "dnsPolicy", "securityContext", "serviceAccountName",
            "automountServiceAccountToken", "enableServiceLinks", "terminationGracePeriodSeconds",
            "priorityClassName", "imagePullSecrets", "topologySpreadConstraints"}
SECURITY_KEYS = {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
                 "readOnlyRootFilesystem", "capabilities", "privileged", "seccompProfile",
                 "fsGroup", "supplementalGroups"}
MOUNT_KEYS = {"name", "mountPath", "readOnly", "subPath", "subPathExpr"}
WRITABLE_VOLUMES = ("emptyDir", "hostPath", "persistentVolumeClaim", "volumeClaimTemplate")


class Container:
    """A container of a rendered workload, with what the checks learn about it."""

    def __init__(self, workload, pod, spec):
        self.workload, self.pod, self.spec = workload, pod, spec
        self.where = f"{workload['kind']}/{workload['metadata']['name']} container {spec.get('name')}"
        self.program = self.kind = self.config = None
        self.ports = {p.get("name"): p["containerPort"] for p in spec.get("ports", [])}
        self.listen = {}  # container port number -> listen host, from the config

    def mounts(self):
        return self.spec.get("volumeMounts", [])


def load_kustomization(k8s_dir, problems):
    """Renders the kustomization as kustomize would for what it uses: resources, the namespace,
    configMapGenerator. Returns (objects, {configmap: {key: source file}})."""
    kust = yaml.safe_load(open(os.path.join(k8s_dir, "kustomization.yaml")))
    namespace = kust.get("namespace")
    objects, configmaps = [], {}
    for resource in kust.get("resources", []):
        path = os.path.join(k8s_dir, resource)
        if not problems.check(os.path.isfile(path), f"kustomization: resource {resource} missing"):
            continue
        for doc in yaml.safe_load_all(open(path)):
            if doc is None:
                continue
            if doc["kind"] != "Namespace" and namespace:
                doc["metadata"]["namespace"] = namespace
            doc["_file"] = resource
            objects.append(doc)
    for gen in kust.get("configMapGenerator", []):
        keys = {}
        for f in gen.get("files", []):
            key, _, source = f.partition("=") if "=" in f else (os.path.basename(f), "", f)
            path = os.path.join(k8s_dir, source)
            problems.check(os.path.isfile(path), f"configMapGenerator {gen['name']}: {source} missing")
            keys[key] = path
        configmaps[gen["name"]] = keys
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": gen["name"], "namespace": namespace}})
    return objects, configmaps, namespace


def check_kubectl_render(k8s_dir, objects, problems):
    """kubectl's own kustomize must render the same objects (names up to the ConfigMap hash)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("kubectl not installed: the kustomization is rendered by this test alone")
        return
    result = subprocess.run([kubectl, "kustomize", k8s_dir], capture_output=True, text=True, timeout=120)
    if not problems.check(result.returncode == 0, f"kubectl kustomize {k8s_dir}: {result.stderr}"):
        return
    rendered = sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]))
                      for d in yaml.safe_load_all(result.stdout) if d)
    ours = sorted((d["kind"], d["metadata"]["name"]) for d in objects)
    problems.check(rendered == ours, f"kubectl kustomize renders {rendered}, this test {ours}")


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def check_workload(workload, configmaps, args, programs, docs, problems):
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    selector = workload["spec"].get("selector", {}).get("matchLabels", {})
    problems.check(selector and all(pod_labels(workload).get(k) == v for k, v in selector.items()),
                   f"{name}: selector {selector} does not match the pod labels {pod_labels(workload)}")
    problems.check(set(pod) <= POD_KEYS, f"{name}: unknown pod spec keys {set(pod) - POD_KEYS}")
    pod_sc = pod.get("securityContext", {})
    problems.check(set(pod_sc) <= SECURITY_KEYS, f"{name}: unknown pod securityContext keys {set(pod_sc) - SECURITY_KEYS}")
    problems.check(pod.get("automountServiceAccountToken") is False,
                   f"{name}: the daemons never call the Kubernetes API: automountServiceAccountToken: false")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "volumeClaimTemplate": claim}
    for v in volumes.values():
        if "configMap" in v:
            problems.check(v["configMap"]["name"] in configmaps,
                           f"{name}: volume {v['name']} names ConfigMap {v['configMap']['name']}, which is not generated")
        if "secret" in v:
            # Secrets are made by the operator (they hold keys): docs/deploy.md must say how.
            problems.check(v["secret"]["secretName"] in docs,
                           f"{name}: Secret {v['secret']['secretName']} is not explained in docs/deploy.md")
        if "hostPath" in v:
            problems.check(v["hostPath"]["path"] != "/dev/kvm",
                           f"{name}: hostPath /dev/kvm is outside the device cgroup unless privileged; use the device plugin")

    containers = []
    for spec in pod.get("containers", []):
        c = Container(workload, pod, spec)
        containers.append(c)
        problems.check(set(spec) <= CONTAINER_KEYS, f"{c.where}: unknown keys {set(spec) - CONTAINER_KEYS}")
        for m in c.mounts():
            problems.check(set(m) <= MOUNT_KEYS, f"{c.where}: unknown volumeMount keys {set(m) - MOUNT_KEYS}")
            problems.check(m["name"] in volumes, f"{c.where}: mounts volume {m['name']}, which the pod does not have")
        c.program = deploy_lib.program_of(spec.get("command", []), programs, args.bin, problems, c.where)
        check_security(c, pod_sc, problems)
        if c.program not in deploy_lib.DAEMONS:
            continue
        c.kind = deploy_lib.DAEMONS[c.program]
        config_path = deploy_lib.config_arg(spec.get("args", []), problems, c.where)
        if not config_path:
            continue
        mount = mount_of(c, config_path)
        volume = volumes.get(mount["name"]) if mount else None
        if not problems.check(volume is not None and "configMap" in volume,
                              f"{c.where}: --config {config_path} is not in a mounted ConfigMap"):
            continue
        key = os.path.relpath(config_path, mount["mountPath"])
        source = configmaps.get(volume["configMap"]["name"], {}).get(key)
        if not problems.check(source is not None,
                              f"{c.where}: ConfigMap {volume['configMap']['name']} has no key {key}"):
            continue
        try:
            c.config, note = deploy_lib.effective_config(args.bin, c.program, source)
            problems.check(True, f"{c.program} accepts {source}")
            if note:
                print(f"{c.where}: {os.path.relpath(source, args.src)}: {note}")
        except ValueError as e:
            problems.fail(f"{c.where}: {e}")
            continue
        check_container_config(c, volumes, docs, problems)
    check_pod_coherence(name, pod, containers, problems)
    return containers


def mount_of(c, path):
    """The volumeMount a path lies under (the deepest one)."""
    best = None
    for m in c.mounts():
        if deploy_lib.under(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def check_security(c, pod_sc, problems):
    sc = c.spec.get("securityContext", {})
    problems.check(set(sc) <= SECURITY_KEYS, f"{c.where}: unknown securityContext keys {set(sc) - SECURITY_KEYS}")
    problems.check(sc.get("allowPrivilegeEscalation") is False, f"{c.where}: allowPrivilegeEscalation must be false")
    problems.check(sc.get("readOnlyRootFilesystem") is True, f"{c.where}: readOnlyRootFilesystem must be true")
    problems.check(not sc.get("privileged"), f"{c.where}: privileged")
    caps = sc.get("capabilities", {})
    problems.check(caps.get("drop") == ["ALL"], f"{c.where}: capabilities.drop must be [ALL]")
    added = caps.get("add", [])
    # perf_event_open of host counters (shim) is the one capability fleetpmu needs.
    problems.check(added == [] or (c.program == "fleetpmu-shim" and added == ["PERFMON"]),
                   f"{c.where}: adds capabilities {added}; only the shim may add PERFMON")
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if added:
        # Added capabilities reach only uid 0's effective set in Kubernetes (no ambient ones).
        problems.check(sc.get("runAsUser") == 0, f"{c.where}: adds {added} but does not run as uid 0, where they count")
    else:
        problems.check(non_root is True, f"{c.where}: runAsNonRoot must be true")


def check_container_config(c, volumes, docs, problems):
    """The files and directories the config names are where the container can use them, and
    the container ports are the config's listen ports."""
    for path in deploy_lib.tls_files(c.kind, c.config):
        mount = mount_of(c, path)
        if not problems.check(mount is not None, f"{c.where}: {path} (its config) is on no volume"):
            continue
        volume = volumes[mount["name"]]
        problems.check(os.path.basename(path) in docs,
                       f"{c.where}: docs/deploy.md does not say where {os.path.basename(path)} "
                       f"(volume {mount['name']}) comes from")
        problems.check("configMap" not in volume, f"{c.where}: {path} is a secret, not ConfigMap material")
    for directory in deploy_lib.writable_paths(c.kind, c.config):
        mount = mount_of(c, directory)
        ok = (mount is not None and not mount.get("readOnly")
              and any(t in volumes[mount["name"]] for t in WRITABLE_VOLUMES))
        problems.check(ok, f"{c.where}: writes to {directory} (its config), which is on no writable volume "
                           f"(the root filesystem is read-only)")
    config_ports = {}
    for key, address in deploy_lib.listen_addresses(c.kind, c.config).items():
        host, port = deploy_lib.split_host_port(address)
        config_ports[port] = key
        c.listen[port] = host
    problems.check(set(c.ports.values()) == set(config_ports),
                   f"{c.where}: container ports {sorted(c.ports.values())}, but the config listens on "
                   f"{ {k: p for p, k in config_ports.items()} }")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = c.spec.get(probe)
        if spec:
            port = (spec.get("httpGet") or spec.get("tcpSocket") or {}).get("port")
            number = c.ports.get(port, port)
            problems.check(number in c.listen and not deploy_lib.is_loopback(c.listen[number]),
                           f"{c.where}: {probe} on port {port}, where the config does not listen reachably")
    if c.kind == "shim" and deploy_lib.field(c.config, "backend") == "BACKEND_KVM":
        device = deploy_lib.field(c.config, "kvm.kvm_device", "/dev/kvm")
        limits = c.spec.get("resources", {}).get("limits", {})
        problems.check(device == "/dev/kvm" and any(k.endswith("/kvm") for k in limits),
                       f"{c.where}: the kvm backend opens {device}, but no device-plugin resource (*/kvm) is requested")
    if c.kind == "agent" and not deploy_lib.field(c.config, "host_id"):
        # host_id defaults to the hostname; only on the host network is that the node's name,
        # which the node's certificate carries. A pod's own hostname changes with every pod.
        problems.check(c.pod.get("hostNetwork") is True,
                       f"{c.where}: host_id unset (the hostname) needs hostNetwork: true")


def check_pod_coherence(name, pod, containers, problems):
    agents = [c for c in containers if c.kind == "agent" and c.config]
    shims = [c for c in containers if c.kind == "shim" and c.config]
    for shim in shims:
        socket = deploy_lib.field(shim.config, "agent_socket")
        agent = next((a for a in agents if deploy_lib.field(a.config, "shim_socket") == socket), None)
        if not problems.check(agent is not None, f"{shim.where}: sends to {socket}, where no agent of the pod listens"):
            continue
        a_mount, s_mount = mount_of(agent, socket), mount_of(shim, socket)
        problems.check(a_mount and s_mount and a_mount["name"] == s_mount["name"],
                       f"{name}: agent and shim do not share the volume of {socket}")
        problems.check(pod.get("nodeSelector", {}).get("kubernetes.io/arch") == "arm64"
                       or deploy_lib.field(shim.config, "backend") != "BACKEND_KVM",
                       f"{name}: the kvm shim runs on arm64 only: nodeSelector kubernetes.io/arch: arm64")


def services_of(objects):
    return [o for o in objects if o["kind"] == "Service"]


def selected(service, containers):
    selector = service["spec"].get("selector", {})
    return [c for c in containers
            if selector and all(pod_labels(c.workload).get(k) == v for k, v in selector.items())
            and c.workload["metadata"].get("namespace") == service["metadata"].get("namespace")]


def target_port(port, container):
    target = port.get("targetPort", port["port"])
    return container.ports.get(target) if isinstance(target, str) else target


def check_services(objects, containers, problems):
    for svc in services_of(objects):
        where = f"Service/{svc['metadata']['name']}"
        pods = selected(svc, containers)
        if not problems.check(pods, f"{where}: its selector matches no pod"):
            continue
        for port in svc["spec"]["ports"]:
            numbers = [(c, target_port(port, c)) for c in pods]
            served = [(c, n) for c, n in numbers if n in c.listen]
            if problems.check(served, f"{where}: port {port.get('name')} reaches no port a daemon listens on"):
                for c, n in served:
                    problems.check(not deploy_lib.is_loopback(c.listen[n]),
                                   f"{where}: port {port.get('name')} -> {c.where} listens on loopback {c.listen[n]}:{n}")

    # The agent's server address: the Service of the server, on its ingest port.
    for c in containers:
        if c.kind != "agent" or not c.config:
            continue
        host, port = deploy_lib.split_host_port(deploy_lib.field(c.config, "server_address"))
        m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
        if not problems.check(m, f"{c.where}: server_address {host}:{port} is not a Service of this cluster"):
            continue
        svc = next((s for s in services_of(objects) if s["metadata"]["name"] == m.group(1)
                    and s["metadata"].get("namespace") == m.group(2)), None)
        if not problems.check(svc, f"{c.where}: no Service {m.group(1)} in namespace {m.group(2)}"):
            continue
        ingest = []
        for p in svc["spec"]["ports"]:
            for server in selected(svc, containers):
                if server.kind == "server" and p["port"] == port:
                    ingest_port = deploy_lib.split_host_port(deploy_lib.field(server.config, "ingest_listen"))[1]
                    ingest.append(target_port(p, server) == ingest_port)
        problems.check(ingest and all(ingest),
                       f"{c.where}: {host}:{port} does not lead to the server's ingest_listen port")


# ---- Prometheus kubernetes_sd, on the rendered objects -----------------------------------------

def sanitize(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def sd_targets(role, objects, containers):
    """The targets kubernetes_sd would find for `role`, with their meta labels, each paired
    with the container and port it reaches."""
    targets = []
    if role == "endpoints":
        for svc in services_of(objects):
            for port in svc["spec"]["ports"]:
                for c in selected(svc, containers):
                    number = target_port(port, c)
                    labels = {"__meta_kubernetes_namespace": svc["metadata"]["namespace"],
                              "__meta_kubernetes_service_name": svc["metadata"]["name"],
                              "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                              "__meta_kubernetes_pod_name": c.workload["metadata"]["name"] + "-0",
                              "__address__": f"10.0.0.1:{number}"}
                    labels.update({f"__meta_kubernetes_service_label_{sanitize(k)}": v
                                   for k, v in svc["metadata"].get("labels", {}).items()})
                    targets.append((labels, c, number))
    elif role == "pod":
        for c in containers:
            for pname, number in c.ports.items():
                labels = {"__meta_kubernetes_namespace": c.workload["metadata"]["namespace"],
                          "__meta_kubernetes_pod_name": c.workload["metadata"]["name"] + "-x",
                          "__meta_kubernetes_pod_node_name": "node-1",
                          "__meta_kubernetes_pod_container_name": c.spec["name"],
                          "__meta_kubernetes_pod_container_port_name": pname or "",
                          "__meta_kubernetes_pod_container_port_number": str(number),
                          "__address__": f"10.0.0.1:{number}"}
                labels.update({f"__meta_kubernetes_pod_label_{sanitize(k)}": v
                               for k, v in pod_labels(c.workload).items()})
                targets.append((labels, c, number))
    return targets


def relabel(labels, rules, problems, job):
    """Prometheus relabelling (keep, drop, replace); None when the target is dropped."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        regex = re.compile(rule.get("regex", "(.*)"))
        m = regex.fullmatch(value)
        if action == "keep":
            if not m:
                return None
        elif action == "drop":
            if m:
                return None
        elif action == "replace":
            if m:
                replacement = rule.get("replacement", "$1")
                labels[rule["target_label"]] = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "", replacement)
        else:
            problems.fail(f"{job}: relabel action {action} is not simulated by this test")
    return labels


def check_scrape(path, objects, containers, problems):
    config = yaml.safe_load(open(path))
    scraped = set()
    for job in config.get("scrape_configs", []):
        name = job["job_name"]
        kept = []
        for sd in job.get("kubernetes_sd_configs", []):
            namespaces = sd.get("namespaces", {}).get("names")
            for labels, c, number in sd_targets(sd["role"], objects, containers):
                if namespaces and labels["__meta_kubernetes_namespace"] not in namespaces:
                    continue
                if relabel(labels, job.get("relabel_configs", []), problems, name) is not None:
                    kept.append((c, number))
        problems.check(job.get("kubernetes_sd_configs"), f"{name}: no kubernetes_sd_configs")
        if not problems.check(kept, f"{name}: its relabelling keeps no target of the manifests"):
            continue
        for c, number in kept:
            metrics = deploy_lib.field(c.config, "metrics_listen") if c.config else None
            ok = metrics is not None and deploy_lib.split_host_port(metrics)[1] == number
            problems.check(ok, f"{name}: keeps {c.where} port {number}, which is not its metrics_listen ({metrics})")
            if ok:
                problems.check(not deploy_lib.is_loopback(deploy_lib.split_host_port(metrics)[0]),
                               f"{name}: {c.where} serves /metrics on loopback ({metrics}): unreachable")
                scraped.add(c.where)
    for c in containers:
        if c.kind in ("server", "agent") and c.config:
            problems.check(c.where in scraped, f"{path}: no job scrapes {c.where}")


def main():
    args = deploy_lib.common_args(__doc__).parse_args()
    programs = args.programs.split(",")
    args.src = os.path.abspath(args.src)
    problems = deploy_lib.Problems("deploy.kubernetes")
    k8s_dir = os.path.join(args.src, "deploy", "k8s")
    docs = open(os.path.join(args.src, "docs", "deploy.md")).read()

    objects, configmaps, namespace = load_kustomization(k8s_dir, problems)
    check_kubectl_render(k8s_dir, objects, problems)
    problems.check(any(o["kind"] == "Namespace" and o["metadata"]["name"] == namespace for o in objects),
                   f"the kustomization's namespace {namespace} is not among its resources")
    containers = []
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        containers += check_workload(workload, configmaps, args, programs, docs, problems)
    kinds = sorted(c.kind for c in containers if c.kind)
    problems.check(kinds == ["agent", "server", "shim"], f"expected one server, agent and shim container, got {kinds}")
    statefulsets = [o for o in objects if o["kind"] == "StatefulSet"]
    for s in statefulsets:
        # SQLite has one writer (DESIGN.md "Storage").
        problems.check(s["spec"].get("replicas") == 1, f"StatefulSet/{s['metadata']['name']}: replicas must be 1")
        problems.check(any(svc["metadata"]["name"] == s["spec"].get("serviceName") for svc in services_of(objects)),
                       f"StatefulSet/{s['metadata']['name']}: serviceName {s['spec'].get('serviceName')} is no Service")
    check_services(objects, containers, problems)
    check_scrape(os.path.join(k8s_dir, "prometheus-scrape.yml"), objects, containers, problems)
    problems.finish()


if __name__ == "__main__":
    main()
