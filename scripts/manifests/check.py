#!/usr/bin/env python3
"""Checks the rendered manifests (Kustomize and Helm) for what a production
operator needs, beyond schema validity. Reads target/rendered/*.yaml as
scripts/check-manifests and scripts/manifests/chart.py leave them.

Each check is a function of the rendered sets that returns its problems.
`--self-test` breaks the manifests in memory, one fault at a time, and
fails unless the check meant to catch that fault reports it: the checks
are themselves tested on every CI run.

Usage: check.py RENDERED_DIR [--self-test]
"""

import copy
import ipaddress
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Rendered sets, by file stem. `hub` and `member` sets are the workloads'
# (Kustomize base or overlay, or the chart in that mode).
HUBS = ["deploy_hub", "deploy_overlays_two-clusters_hub", "deploy_overlays_cert-manager_hub",
        "helm_hub", "helm_two-clusters-hub"]
MEMBERS = ["deploy_member", "deploy_overlays_two-clusters_east-1", "deploy_overlays_two-clusters_west-1",
           "deploy_overlays_cert-manager_east-1", "helm_two-clusters-east-1",
           "helm_two-clusters-west-1", "helm_cert-manager-east-1"]
# Member sets in the hub-only shape (no edge follower): the component
# deploy/member/hub-only and the chart's member.edge.enabled=false.
HUB_ONLY = ["deploy_overlays_hub-only-member", "helm_ci_member-hub-only"]
MEMBERS += ["deploy_overlays_hub-only-member"]
# Member sets for clusters that run no hub: they bring the namespace.
DEDICATED_MEMBERS = ["deploy_overlays_two-clusters_east-1", "deploy_overlays_two-clusters_west-1",
                     "deploy_overlays_cert-manager_east-1"]
# Sets that must carry PodMonitors.
MONITORED = ["deploy_overlays_two-clusters_hub", "deploy_overlays_two-clusters_east-1",
             "deploy_overlays_two-clusters_west-1", "helm_two-clusters-hub",
             "helm_two-clusters-east-1", "helm_two-clusters-west-1"]
# Helm values file -> the Kustomize rendering it must equal.
PARITY = {
    "helm_hub": "deploy_hub",
    "helm_two-clusters-hub": "deploy_overlays_two-clusters_hub",
    "helm_two-clusters-east-1": "deploy_overlays_two-clusters_east-1",
    "helm_two-clusters-west-1": "deploy_overlays_two-clusters_west-1",
    "helm_cert-manager-east-1": "deploy_overlays_cert-manager_east-1",
}
# Fleets: the hub's certificate (a rendered Secret, or a cert-manager
# Certificate) and the members that dial it.
FLEETS = {
    "two-clusters": ("deploy_overlays_two-clusters_hub",
                     ["deploy_overlays_two-clusters_east-1", "deploy_overlays_two-clusters_west-1"]),
    "cert-manager": ("deploy_overlays_cert-manager_hub", ["deploy_overlays_cert-manager_east-1"]),
}
SYNCER_MAX_BACKOFF = 10  # seconds: meshdns-syncer --max-backoff default
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
               "app.kubernetes.io/version"}


def load(rendered):
    sets = {}
    for path in sorted(pathlib.Path(rendered).glob("*.yaml")):
        sets[path.stem] = [d for d in yaml.safe_load_all(path.read_text()) if d]
        # The chart's ci/ values: checked as hubs or members by what they render.
        if path.stem.startswith("helm_ci_"):
            (HUBS if hub_sts(sets[path.stem]) else MEMBERS).append(path.stem)
    return sets


def objects(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs, kind, name=None):
    found = objects(docs, kind, name)
    return found[0] if len(found) == 1 else None


def hub_sts(docs):
    return one(docs, "StatefulSet", "meshdns")


def syncer(docs):
    return one(docs, "Deployment", "meshdns-syncer")


def edge(docs):
    return one(docs, "Deployment", "meshdns-edge")


def workloads(sets, s):
    """The set's hardened workloads: the hub's StatefulSet, or the syncer and the edge follower."""
    if s in HUBS:
        return [hub_sts(sets[s])]
    return [w for w in (syncer(sets[s]), edge(sets[s])) if w is not None]


def container(workload):
    return workload["spec"]["template"]["spec"]["containers"][0]


def args(c):
    return c.get("args", [])


def flag(c, name):
    """The value of --name=VALUE (or True for a bare --name), else None."""
    for a in args(c):
        if a == name:
            return True
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def env(c, name):
    for e in c.get("env", []):
        if e["name"] == name:
            return e
    return None


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


# ---------------------------------------------------------------- checks


def check_state_volume(sets):
    """The state file is on a volume that survives the pod's replacement."""
    out = []
    for s in HUBS:
        sts = hub_sts(sets[s])
        c = container(sts)
        path = flag(c, "--state-file")
        if not isinstance(path, str):
            out.append(f"{s}: meshdns serve has no --state-file")
            continue
        mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        if mount is None or mount["name"] not in claims:
            out.append(f"{s}: --state-file {path} is not on a volumeClaimTemplate (it would be lost with the pod)")
        if sts["spec"].get("persistentVolumeClaimRetentionPolicy", {}).get("whenScaled") == "Delete":
            out.append(f"{s}: scaling down deletes the registry's state")
    return out


def check_readiness_gating(sets):
    """Readiness waits for data, and a rollout is paced past the syncers' reconnect."""
    out = []
    for s in HUBS:
        sts = hub_sts(sets[s])
        c = container(sts)
        if flag(c, "--ready-wait-data") is not True:
            out.append(f"{s}: no --ready-wait-data: an empty replica turns ready")
        probe = c.get("readinessProbe", {}).get("httpGet", {})
        if probe.get("path") != "/readyz":
            out.append(f"{s}: the readiness probe is not /readyz")
        if sts["spec"].get("minReadySeconds", 0) < 2 * SYNCER_MAX_BACKOFF:
            out.append(f"{s}: minReadySeconds under twice the syncers' reconnect backoff ({SYNCER_MAX_BACKOFF}s)")
        if sts["spec"].get("updateStrategy", {}).get("rollingUpdate", {}).get("maxUnavailable", 1) != 1:
            out.append(f"{s}: a rollout replaces more than one replica at a time")
        start = c.get("startupProbe", {})
        budget = start.get("periodSeconds", 10) * start.get("failureThreshold", 3)
        if start.get("httpGet", {}).get("path") != "/healthz" or budget < 120:
            out.append(f"{s}: no startupProbe giving the state file at least 2 minutes to load")
        # gRPC Services must list unready replicas: they get their data through them.
        for svc in objects(sets[s], "Service"):
            if svc["metadata"]["name"].endswith("-grpc") and not svc["spec"].get("publishNotReadyAddresses"):
                out.append(f"{s}: Service {svc['metadata']['name']} hides unready replicas from syncers (--ready-wait-data never clears)")
    return out


def check_pre_stop(sets):
    """Endpoints are removed before the listeners close, and the grace period covers the drain."""
    out = []
    for s in HUBS:
        spec = hub_sts(sets[s])["spec"]["template"]["spec"]
        c = container(hub_sts(sets[s]))
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if sleep < 3:
            out.append(f"{s}: no preStop sleep of 3s or more before SIGTERM")
        timeout = seconds(flag(c, "--shutdown-timeout") or "10s")
        if spec.get("terminationGracePeriodSeconds", 30) <= sleep + timeout:
            out.append(f"{s}: terminationGracePeriodSeconds does not cover preStop + --shutdown-timeout")
    return out


def check_spread(sets):
    """Replicas spread over nodes and zones."""
    out = []
    for s in HUBS:
        spec = hub_sts(sets[s])["spec"]["template"]["spec"]
        zones = [t for t in spec.get("topologySpreadConstraints", [])
                 if t["topologyKey"] == "topology.kubernetes.io/zone"
                 and selects(t["labelSelector"], {"app.kubernetes.io/name": "meshdns"})]
        if not zones:
            out.append(f"{s}: no zone topologySpreadConstraint over the hub's pods")
        anti = spec.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
        if not any(a["topologyKey"] == "kubernetes.io/hostname" for a in anti):
            out.append(f"{s}: two replicas may share a node")
        if hub_sts(sets[s])["spec"]["replicas"] < 2:
            out.append(f"{s}: one replica")
        if not objects(sets[s], "PodDisruptionBudget"):
            out.append(f"{s}: no PodDisruptionBudget")
    return out


def check_priority_and_resources(sets):
    """Priority class, memory request = limit, workers from the CPU request."""
    out = []
    for s, w in [(s, w) for s in HUBS + MEMBERS for w in workloads(sets, s)]:
        spec = w["spec"]["template"]["spec"]
        c = container(w)
        if not spec.get("priorityClassName"):
            out.append(f"{s}: no priorityClassName")
        res = c.get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        if not req.get("memory") or req.get("memory") != lim.get("memory"):
            out.append(f"{s}: memory request and limit differ or are missing")
        if not req.get("cpu"):
            out.append(f"{s}: no CPU request")
        if c["command"] == ["meshdns"]:
            workers = env(c, "MESHDNS_WORKERS") or {}
            ref = workers.get("valueFrom", {}).get("resourceFieldRef", {})
            if ref.get("resource") != "requests.cpu":
                out.append(f"{s}: MESHDNS_WORKERS does not follow the CPU request")
    return out


def check_syncer_rollout(sets):
    """A syncer upgrade starts the new one first: the cluster never goes stale."""
    out = []
    for s in MEMBERS:
        strategy = syncer(sets[s])["spec"].get("strategy", {})
        rolling = strategy.get("rollingUpdate", {})
        if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0 or rolling.get("maxSurge", 0) in (0, "0", "0%"):
            out.append(f"{s}: the syncer is not rolled with surge and maxUnavailable 0")
    return out


def check_exposure(sets):
    """DNS on an internal load balancer keeping source addresses; gRPC on internal load balancers with source ranges."""
    out = []
    internal = {"networking.gke.io/load-balancer-type": "Internal",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
                "service.beta.kubernetes.io/azure-load-balancer-internal": "true"}
    for s in HUBS:
        dns = one(sets[s], "Service", "meshdns")
        grpc = [x for x in objects(sets[s], "Service") if x["metadata"]["name"].endswith("-grpc")]
        replicas = hub_sts(sets[s])["spec"]["replicas"]
        if len(grpc) != replicas:
            out.append(f"{s}: {len(grpc)} gRPC Services for {replicas} replicas")
        for svc in [dns] + grpc:
            spec, name = svc["spec"], svc["metadata"]["name"]
            if spec.get("type") != "LoadBalancer":
                out.append(f"{s}: Service {name} is not reachable from member clusters (type {spec.get('type', 'ClusterIP')})")
            annotations = svc["metadata"].get("annotations", {})
            if any(annotations.get(k) != v for k, v in internal.items()):
                out.append(f"{s}: Service {name} is not an internal load balancer")
            ranges = spec.get("loadBalancerSourceRanges", [])
            if not ranges or any(not ipaddress.ip_network(r).is_private for r in ranges):
                out.append(f"{s}: Service {name} has no private loadBalancerSourceRanges")
        if dns["spec"].get("externalTrafficPolicy") != "Local":
            out.append(f"{s}: the DNS load balancer rewrites source addresses (externalTrafficPolicy is not Local): locality is lost")
        for svc in grpc:
            if svc["spec"].get("externalTrafficPolicy") != "Local":
                out.append(f"{s}: Service {svc['metadata']['name']} rewrites source addresses: the NetworkPolicy's ipBlocks would refuse the syncers")
    return out


def _policy_ports(policy, direction):
    rules = policy["spec"].get(direction) or []
    return [(r, {(str(p.get("port")), p.get("protocol", "TCP")) for p in r.get("ports", [])}) for r in rules]


def check_network_policies(sets):
    """DNS from member CIDRs, gRPC from syncers, admin from monitoring; the syncer's egress bounded."""
    out = []
    for s in HUBS:
        pols = [p for p in objects(sets[s], "NetworkPolicy") if selects(p["spec"]["podSelector"], {"app.kubernetes.io/name": "meshdns"})]
        if not pols:
            out.append(f"{s}: no NetworkPolicy for the hub")
            continue
        p = pols[0]
        if set(p["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
            out.append(f"{s}: the hub's NetworkPolicy does not isolate ingress and egress")
        rules = _policy_ports(p, "ingress")
        want = {("dns-udp", "UDP"): "ipBlock", ("dns-tcp", "TCP"): "ipBlock", ("grpc", "TCP"): "ipBlock",
                ("admin", "TCP"): "namespaceSelector"}
        for port, peer in want.items():
            allowed = [r for r, ports in rules if port in ports]
            if not allowed or any(not r.get("from") or any(peer not in f for f in r["from"]) for r in allowed):
                out.append(f"{s}: the hub's port {port[0]} is not limited to {peer} peers")
        covered = set().union(*[ports for _, ports in rules]) if rules else set()
        if covered - set(want):
            out.append(f"{s}: the hub's NetworkPolicy opens {sorted(covered - set(want))}")
        dns = one(sets[s], "Service", "meshdns")
        dns_from = {f["ipBlock"]["cidr"] for r, ports in rules if ("dns-udp", "UDP") in ports for f in r["from"]}
        if dns_from != set(dns["spec"].get("loadBalancerSourceRanges", [])):
            out.append(f"{s}: the NetworkPolicy's DNS peers and the load balancer's source ranges differ")
    for s in MEMBERS:
        pols = [p for p in objects(sets[s], "NetworkPolicy") if selects(p["spec"]["podSelector"], {"app.kubernetes.io/name": "meshdns-syncer"})]
        if not pols:
            out.append(f"{s}: no NetworkPolicy for the syncer")
            continue
        p = pols[0]
        ingress = _policy_ports(p, "ingress")
        if [ports for _, ports in ingress] != [{("admin", "TCP")}] or any("namespaceSelector" not in f for r, _ in ingress for f in r.get("from", [{}])):
            out.append(f"{s}: the syncer takes more than admin from the monitoring namespace")
        egress = _policy_ports(p, "egress")
        grpc = [r for r, ports in egress if ("7443", "TCP") in ports]
        if not grpc or any(not r.get("to") for r in grpc):
            out.append(f"{s}: the syncer's gRPC egress is not bounded to the hub's range")
    return out


def check_monitors(sets):
    """PodMonitors scrape the admin ports' /metrics of the right pods."""
    out = []
    for s in MONITORED:
        for w, port in [(w, "admin") for w in workloads(sets, s)]:
            labels = w["spec"]["template"]["metadata"]["labels"]
            mons = [m for m in objects(sets[s], "PodMonitor") + objects(sets[s], "ServiceMonitor")
                    if selects(m["spec"]["selector"], labels)]
            if not mons:
                out.append(f"{s}: no PodMonitor selects {w['metadata']['name']}")
                continue
            ports = {p["name"] for p in container(w)["ports"]}
            for m in mons:
                for e in m["spec"].get("podMetricsEndpoints", m["spec"].get("endpoints", [])):
                    if e.get("port") not in ports or e.get("port") != port or e.get("path") != "/metrics":
                        out.append(f"{s}: {m['kind']} {m['metadata']['name']} scrapes {e.get('port')}{e.get('path')}, not {port}/metrics")
                if m["metadata"].get("namespace") != w["metadata"].get("namespace"):
                    out.append(f"{s}: {m['kind']} {m['metadata']['name']} is not in the workload's namespace")
    return out


def check_namespace_ownership(sets):
    """One owner for the namespace: the hub base; member bases never delete it."""
    out = []
    for s in ["deploy_member"] + [m for m in MEMBERS if m.startswith("helm_")]:
        if objects(sets[s], "Namespace"):
            out.append(f"{s}: a member's objects include the Namespace: deleting them would delete a hub beside it")
    for s in ["deploy_hub"] + DEDICATED_MEMBERS:
        if not one(sets[s], "Namespace", "meshdns-system"):
            out.append(f"{s}: does not bring the meshdns-system Namespace")
    return out


def check_pod_security(sets):
    """The namespace enforces the restricted Pod Security Standard, and every pod meets it."""
    out = []
    for s, docs in sets.items():
        for ns in objects(docs, "Namespace"):
            labels = ns["metadata"].get("labels", {})
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                out.append(f"{s}: Namespace {ns['metadata']['name']} does not enforce the restricted standard")
    allowed_volumes = {"secret", "configMap", "emptyDir", "projected", "persistentVolumeClaim", "downwardAPI", "csi", "ephemeral"}
    for s, w in [(s, w) for s in HUBS + MEMBERS for w in workloads(sets, s)]:
        spec = w["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                out.append(f"{s}: {key}")
        for v in spec.get("volumes", []):
            if not set(v) - {"name"} <= allowed_volumes:
                out.append(f"{s}: volume {v['name']} is of a kind restricted forbids")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{s}: {c['name']} may escalate privileges")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                out.append(f"{s}: {c['name']} does not drop ALL capabilities")
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))) or sc.get("runAsUser", psc.get("runAsUser")) == 0:
                out.append(f"{s}: {c['name']} may run as root")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.append(f"{s}: {c['name']} has no RuntimeDefault seccomp profile")
            if sc.get("privileged") or any(p.get("hostPort") for p in c.get("ports", [])):
                out.append(f"{s}: {c['name']} is privileged or takes a host port")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{s}: {c['name']} has a writable root filesystem")
    return out


def check_headless(sets):
    """The StatefulSet's governing Service is headless and selects its pods."""
    out = []
    for s in HUBS:
        sts = hub_sts(sets[s])
        svc = one(sets[s], "Service", sts["spec"].get("serviceName"))
        labels = sts["spec"]["template"]["metadata"]["labels"]
        if svc is None or svc["spec"].get("clusterIP") != "None" or not selects({"matchLabels": svc["spec"].get("selector", {})}, labels):
            out.append(f"{s}: the StatefulSet's serviceName is not a headless Service over its pods")
        elif not svc["spec"].get("publishNotReadyAddresses"):
            out.append(f"{s}: the governing Service hides unready replicas' names")
    return out


def _needed_rules(c):
    core = {"services"}
    if flag(c, "--announce-nodes") or not (flag(c, "--client-cidr") and flag(c, "--region") and flag(c, "--zone") and flag(c, "--provider")):
        core.add("nodes")
    if flag(c, "--namespace-selector"):
        core.add("namespaces")
    need = {("", r) for r in core} | {("discovery.k8s.io", "endpointslices")}
    if flag(c, "--mcs"):
        need.add(("multicluster.x-k8s.io", "serviceexports"))
    if flag(c, "--mcs-status"):
        need |= {("multicluster.x-k8s.io", "serviceimports"), ("", "namespaces"), ("", "events")}
    return need


def _needed_writes(c):
    """(group, resource, verb) the syncer writes with its flags: nothing
    but what --mcs-status keeps (ServiceImports, ServiceExport status,
    Events)."""
    if not flag(c, "--mcs-status"):
        return set()
    mcs = "multicluster.x-k8s.io"
    need = {(mcs, "serviceimports", v) for v in ("create", "update", "delete")}
    need |= {(mcs, "serviceimports/status", "update"), (mcs, "serviceexports/status", "update")}
    need |= {("", "events", "create"), ("", "events", "update")}
    if flag(c, "--mcs-create-namespaces"):
        need.add(("", "namespaces", "create"))
    return need


def check_rbac(sets):
    """The syncer's ClusterRoles grant exactly what its flags read, and write only what --mcs-status writes."""
    out = []
    for s in MEMBERS:
        docs = sets[s]
        w = syncer(docs)
        sa = w["spec"]["template"]["spec"]["serviceAccountName"]
        bound = {b["roleRef"]["name"] for b in objects(docs, "ClusterRoleBinding") + objects(docs, "RoleBinding")
                 if any(x["kind"] == "ServiceAccount" and x["name"] == sa for x in b.get("subjects", []))}
        granted, writes = set(), set()
        for role in objects(docs, "ClusterRole"):
            if role["metadata"]["name"] not in bound:
                continue
            for rule in role.get("rules", []):
                for g in rule["apiGroups"]:
                    for r in rule["resources"]:
                        for v in rule["verbs"]:
                            if v in ("get", "list", "watch"):
                                granted.add((g, r))
                            else:
                                writes.add((g, r, v))
        need = _needed_rules(container(w))
        if granted != need:
            out.append(f"{s}: RBAC grants {sorted(granted - need)} beyond the flags and lacks {sorted(need - granted)}")
        need_writes = _needed_writes(container(w))
        if writes != need_writes:
            out.append(f"{s}: RBAC grants writes {sorted(writes - need_writes)} beyond the flags and lacks {sorted(need_writes - writes)}")
    return out


def check_mcs_crds(sets):
    """--mcs ships the ServiceExport CRD, --mcs-status the ServiceImport CRD (kept on uninstall)."""
    out = []
    for s in MEMBERS:
        if flag(container(syncer(sets[s])), "--mcs"):
            crd = one(sets[s], "CustomResourceDefinition", "serviceexports.multicluster.x-k8s.io")
            if crd is None:
                out.append(f"{s}: --mcs without the ServiceExport CRD")
            elif crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
                out.append(f"{s}: the ServiceExport CRD would be deleted (and every ServiceExport) on uninstall")
        if flag(container(syncer(sets[s])), "--mcs-status"):
            crd = one(sets[s], "CustomResourceDefinition", "serviceimports.multicluster.x-k8s.io")
            if crd is None:
                out.append(f"{s}: --mcs-status without the ServiceImport CRD")
            elif crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
                out.append(f"{s}: the ServiceImport CRD would be deleted (and every ServiceImport) on uninstall")
    imports_copy = (ROOT / "deploy/helm/meshdns/files/serviceimport-crd.yaml").read_text()
    if imports_copy != (ROOT / "deploy/member/mcs-status/serviceimport-crd.yaml").read_text():
        out.append("the chart's ServiceImport CRD differs from deploy/member/mcs-status/serviceimport-crd.yaml")
    chart_copy = (ROOT / "deploy/helm/meshdns/files/serviceexport-crd.yaml").read_text()
    if chart_copy != (ROOT / "deploy/member/mcs/serviceexport-crd.yaml").read_text():
        out.append("the chart's ServiceExport CRD differs from deploy/member/mcs/serviceexport-crd.yaml")
    return out


def _openssl(*cmd, data=None):
    return subprocess.run(["openssl", *cmd], input=data, capture_output=True, check=True).stdout


def _secret_files(secret):
    import base64
    files = {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}
    files.update({k: v.encode() for k, v in secret.get("stringData", {}).items()})
    return files


def check_no_ca_key(sets):
    """Member clusters get their own key and the CA's certificate, never the CA key."""
    out = []
    for s in MEMBERS:
        for secret in objects(sets[s], "Secret"):
            for name, data in _secret_files(secret).items():
                if b"PRIVATE KEY" not in data:
                    continue
                if name != "tls.key":
                    out.append(f"{s}: Secret {secret['metadata']['name']} carries a private key as {name}")
                    continue
                cert = _secret_files(secret).get("tls.crt", b"")
                key_pub = _openssl("pkey", "-pubout", data=data)
                cert_pub = _openssl("x509", "-noout", "-pubkey", data=cert) if cert else b""
                if key_pub != cert_pub:
                    out.append(f"{s}: Secret {secret['metadata']['name']} tls.key is not its certificate's key (a CA key?)")
                if b"CA:TRUE" in _openssl("x509", "-noout", "-text", data=cert):
                    out.append(f"{s}: Secret {secret['metadata']['name']} tls.crt is a CA")
    for pki in (ROOT / "deploy/overlays").glob("*/*/pki"):
        if pki.parent.name != "hub" and (pki / "ca.key").exists():
            out.append(f"{pki}: a member overlay holds the CA key")
    return out


def _dialed_hosts(docs):
    c = container(syncer(docs))
    registries = (env(c, "MESHDNS_REGISTRY") or {}).get("value") or flag(c, "--registry") or ""
    if edge(docs) is not None:
        registries += "," + (_follows(container(edge(docs))) or "")
    return {re.sub(r"^https://", "", r).rsplit(":", 1)[0] for r in registries.split(",") if r}


def _follows(c):
    return (env(c, "MESHDNS_FOLLOW") or {}).get("value") or flag(c, "--follow")


def _san_dns(cert_pem):
    text = _openssl("x509", "-noout", "-ext", "subjectAltName", data=cert_pem).decode()
    return set(re.findall(r"DNS:([^,\s]+)", text)) | set(re.findall(r"IP Address:([^,\s]+)", text))


def check_san_consistency(sets):
    """Every name a syncer dials is in the hub's server certificate, and each
    member's client certificate names the cluster it says it is."""
    out = []
    for fleet, (hub, members) in FLEETS.items():
        tls = one(sets[hub], "Secret", "meshdns-tls")
        cert = one(sets[hub], "Certificate", "meshdns-tls")
        if tls is not None:
            files = _secret_files(tls)
            names = _san_dns(files["tls.crt"])
        elif cert is not None:
            names = set(cert["spec"].get("dnsNames", [])) | set(cert["spec"].get("ipAddresses", []))
        else:
            out.append(f"{fleet}: no server certificate for the hub")
            continue
        for m in members:
            missing = _dialed_hosts(sets[m]) - names
            if missing:
                out.append(f"{fleet}: {m} dials {sorted(missing)}, not in the hub's certificate {sorted(names)}")
            cluster = env(container(syncer(sets[m])), "MESHDNS_CLUSTER")["value"]
            client = one(sets[m], "Secret", "meshdns-syncer-tls")
            if client is not None:
                files = _secret_files(client)
                san = _openssl("x509", "-noout", "-ext", "subjectAltName", data=files["tls.crt"]).decode()
                if f"URI:spiffe://meshdns/cluster/{cluster}" not in san:
                    out.append(f"{fleet}: {m}'s certificate does not name spiffe://meshdns/cluster/{cluster}")
                if tls is not None:
                    with tempfile.NamedTemporaryFile() as ca:
                        ca.write(files["ca.crt"])
                        ca.flush()
                        verify = subprocess.run(["openssl", "verify", "-CAfile", ca.name],
                                                input=_secret_files(tls)["tls.crt"], capture_output=True)
                    if verify.returncode != 0:
                        out.append(f"{fleet}: {m} does not trust the hub's certificate with its ca.crt")
            elif cert is not None:
                uris = {u for c in objects(sets[hub], "Certificate") for u in c["spec"].get("uris", [])}
                if f"spiffe://meshdns/cluster/{cluster}" not in uris:
                    out.append(f"{fleet}: no Certificate names spiffe://meshdns/cluster/{cluster}")
    return out


def check_image(sets):
    """One image name, its tag the crate version, everywhere."""
    out = []
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'\[workspace\.package\][^\[]*?\nversion = "([^"]+)"', cargo).group(1)
    name = re.search(r'^image_name=\$\{MESHDNS_IMAGE:-([^}]+)\}', (ROOT / "scripts/image").read_text(), re.M).group(1)
    want = f"{name}:{version}"
    for s, docs in sets.items():
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                if c["image"] != want:
                    out.append(f"{s}: {d['metadata']['name']} runs {c['image']}, not {want}")
    chart = yaml.safe_load((ROOT / "deploy/helm/meshdns/Chart.yaml").read_text())
    if chart["version"] != version or chart["appVersion"] != version:
        out.append(f"Chart.yaml: version {chart['version']} / appVersion {chart['appVersion']}, crate {version}")
    values = yaml.safe_load((ROOT / "deploy/helm/meshdns/values.yaml").read_text())
    if values["image"]["repository"] != name:
        out.append(f"values.yaml: image.repository {values['image']['repository']}, scripts/image builds {name}")
    return out


def check_coredns_snippet(sets):
    """The CoreDNS snippet rotates, rides out a hub outage, covers NodeLocal DNSCache."""
    out = []
    text = (ROOT / "deploy/coredns/Corefile.snippet").read_text()
    code = "\n".join(l.split("#")[0] for l in text.splitlines())
    blocks = re.findall(r"^(\S[^{]*)\{", code, re.M)
    if not any(b.strip().startswith("global:53") for b in blocks):
        out.append("Corefile.snippet: no global:53 block")
    for word in ("loadbalance", "serve_stale", "forward"):
        if not re.search(rf"^\s*{word}\b", code, re.M):
            out.append(f"Corefile.snippet: no {word}")
    stub = yaml.safe_load((ROOT / "deploy/coredns/kube-dns-stubdomains.yaml").read_text())
    forward = re.search(r"^\s*forward \. ([^{]+)\{", code, re.M)
    if forward and set(forward.group(1).split()) != set(json.loads(stub["data"]["stubDomains"])["global"]):
        out.append("Corefile.snippet and kube-dns-stubdomains.yaml forward global to different addresses")
    nodelocal = (ROOT / "deploy/coredns/nodelocaldns.snippet")
    if not nodelocal.exists() or "global:53" not in nodelocal.read_text():
        out.append("no NodeLocal DNSCache global block (deploy/coredns/nodelocaldns.snippet)")
        return out
    # Both zones go to this cluster's edge follower, by its Service's ClusterIP.
    nodelocal_code = "\n".join(l.split("#")[0] for l in nodelocal.read_text().splitlines())
    stub_zones = json.loads(stub["data"]["stubDomains"])
    for s in MEMBERS:
        svc = one(sets[s], "Service", "meshdns-edge")
        if svc is None:
            continue
        ip = svc["spec"].get("clusterIP")
        for name, text in (("Corefile.snippet", code), ("nodelocaldns.snippet", nodelocal_code)):
            server = re.search(r"^(\S[^{]*)\{", text, re.M)
            zones = set(server.group(1).split()) if server else set()
            if not {"global:53", "clusterset.local:53"} <= zones:
                out.append(f"{name}: the server block does not take both global and clusterset.local")
            fwd = re.search(r"^\s*forward \. ([^{]+)\{", text, re.M)
            if not fwd or fwd.group(1).split() != [ip]:
                out.append(f"{s}: {name} forwards to {fwd.group(1).split() if fwd else None}, not the edge follower's Service ({ip})")
        if any(stub_zones.get(z) != [ip] for z in ("global", "clusterset.local")):
            out.append(f"{s}: kube-dns-stubdomains.yaml does not send global and clusterset.local to the edge follower's Service ({ip})")
    return out


def check_edge(sets):
    """Each member cluster runs a hardened edge follower behind a DNS Service (none in the hub-only shape)."""
    out = []
    for s in MEMBERS:
        docs, e = sets[s], edge(sets[s])
        if s in HUB_ONLY:
            left = [f"{d['kind']} {d['metadata']['name']}" for d in docs if d["metadata"]["name"] == "meshdns-edge"]
            if left:
                out.append(f"{s}: the hub-only shape still has {left}")
            continue
        if e is None:
            out.append(f"{s}: no edge follower (Deployment meshdns-edge)")
            continue
        spec, c = e["spec"]["template"]["spec"], container(e)
        labels = e["spec"]["template"]["metadata"]["labels"]
        if args(c)[:1] != ["serve"] or not str(_follows(c) or "").startswith("https://"):
            out.append(f"{s}: the edge does not run meshdns serve --follow https://...")
        creds = (flag(c, "--follow-tls-cert") and flag(c, "--follow-tls-key")) or flag(c, "--follow-token-file")
        if not creds or not flag(c, "--follow-tls-ca"):
            out.append(f"{s}: the edge follower has no reader credential and CA for the hub")
        path = flag(c, "--state-file")
        mount = next((m for m in c.get("volumeMounts", []) if isinstance(path, str) and path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if mount is None:
            out.append(f"{s}: the edge follower's --state-file is not on a writable volume (read-only root)")
        if e["spec"].get("replicas", 1) < 2:
            out.append(f"{s}: one edge follower replica")
        if not any(t["topologyKey"] == "topology.kubernetes.io/zone" and selects(t["labelSelector"], labels)
                   for t in spec.get("topologySpreadConstraints", [])):
            out.append(f"{s}: the edge followers do not spread over zones")
        if not any(selects(p["spec"]["selector"], labels) for p in objects(docs, "PodDisruptionBudget")):
            out.append(f"{s}: no PodDisruptionBudget over the edge followers")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz" or flag(c, "--ready-wait-data") is not True:
            out.append(f"{s}: the edge follower turns ready before it holds data")
        if spec.get("automountServiceAccountToken") is not False:
            out.append(f"{s}: the edge follower mounts a Kubernetes token it never uses")
        svc = one(docs, "Service", "meshdns-edge")
        ports = {(p["port"], p.get("protocol", "TCP")) for p in (svc or {}).get("spec", {}).get("ports", [])}
        if svc is None or svc["spec"].get("type", "ClusterIP") != "ClusterIP" \
                or not selects({"matchLabels": svc["spec"].get("selector", {})}, labels) \
                or not {(53, "UDP"), (53, "TCP")} <= ports:
            out.append(f"{s}: no ClusterIP Service for DNS (53 UDP and TCP) over the edge followers")
        domains = {a.split("=", 1)[1] for a in args(c) if a.startswith("--domain=")}
        if not {"global", "clusterset.local"} <= domains:
            out.append(f"{s}: the edge follower does not serve global and clusterset.local")
    return out


def check_custom_resources(sets):
    """Custom resources validate, strictly, against their CRDs' schemas."""
    out = []
    crds = []
    for f in list((ROOT / "scripts/manifests/crds").glob("*.yaml")) + [ROOT / "deploy/member/mcs/serviceexport-crd.yaml",
                                                                    ROOT / "deploy/member/mcs-status/serviceimport-crd.yaml"]:
        crds += [d for d in yaml.safe_load_all(f.read_text()) if d]
    schemas = {}
    for crd in crds:
        for v in crd["spec"]["versions"]:
            schemas[(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])] = strict(v["schema"]["openAPIV3Schema"])
    builtin = re.compile(r"^(v1|(apps|batch|policy|autoscaling|rbac\.authorization\.k8s\.io|networking\.k8s\.io|apiextensions\.k8s\.io|discovery\.k8s\.io|storage\.k8s\.io|scheduling\.k8s\.io|coordination\.k8s\.io|admissionregistration\.k8s\.io)/\w+)$")
    meta = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}, "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
    for s, docs in sets.items():
        for d in docs:
            if builtin.match(d["apiVersion"]):
                continue
            schema = schemas.get((d["apiVersion"], d["kind"]))
            if schema is None:
                out.append(f"{s}: no schema for {d['apiVersion']} {d['kind']}")
                continue
            for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=str):
                out.append(f"{s}: {d['kind']} {d['metadata'].get('name')}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            for e in jsonschema.Draft7Validator(meta).iter_errors(d["metadata"]):
                out.append(f"{s}: {d['kind']} metadata: {e.message}")
    return out


def strict(schema):
    """An openAPIV3Schema as JSON Schema, unknown fields refused."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string"):
            node["type"] = ["integer", "string"]
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for key in ("properties",):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            walk(node.get(key))
    walk(schema)
    # metadata is checked on its own.
    schema.get("properties", {}).pop("metadata", None)
    schema.get("properties", {})["metadata"] = {"type": "object"}
    return schema


def _normalized(docs):
    text = json.dumps([d for d in docs if d["kind"] not in ("Namespace", "Secret")
                       and not d["apiVersion"].startswith("cert-manager.io/")])
    text = re.sub(r"meshdns-config-[a-z0-9]{10}", "meshdns-config", text)
    result = {}
    for d in json.loads(text):
        for meta in (d["metadata"], d.get("spec", {}).get("template", {}).get("metadata")):
            if not meta:
                continue
            for k in list(meta.get("labels", {})):
                if k in HELM_LABELS:
                    del meta["labels"][k]
            for k in list(meta.get("annotations", {})):
                if k.startswith("checksum/"):
                    del meta["annotations"][k]
            for k in ("labels", "annotations"):
                if k in meta and not meta[k]:
                    del meta[k]
        result[(d["kind"], d["metadata"]["name"])] = d
    return result


def check_parity(sets):
    """The chart renders what the Kustomize bases render, for the same settings."""
    out = []
    for chart, kustomize in PARITY.items():
        a, b = _normalized(sets[chart]), _normalized(sets[kustomize])
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append(f"{chart} vs {kustomize}: the chart lacks {key}")
            elif key not in b:
                out.append(f"{chart} vs {kustomize}: Kustomize lacks {key}")
            elif a[key] != b[key]:
                out.append(f"{chart} vs {kustomize}: {key} differs: {diff(a[key], b[key])}")
    return out


def diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return diff(a.get(k), b.get(k), f"{path}/{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return diff(x, y, f"{path}/{i}")
    return f"{path}: chart {json.dumps(a)} kustomize {json.dumps(b)}"


CHECKS = [check_state_volume, check_readiness_gating, check_pre_stop, check_spread,
          check_priority_and_resources, check_syncer_rollout, check_exposure, check_network_policies,
          check_monitors, check_namespace_ownership, check_pod_security, check_headless, check_rbac,
          check_mcs_crds, check_no_ca_key, check_san_consistency, check_image, check_coredns_snippet,
          check_custom_resources, check_parity, check_edge]


# ------------------------------------------------------------ self-test

def _hub(s):
    return lambda sets: hub_sts(sets[s])


def mutations():
    """(fault, the check that must catch it, how to break a copy of the sets)."""
    def c(sets, s):
        return container(hub_sts(sets[s]) if s in HUBS else syncer(sets[s]))

    def set_args(s, fn):
        def apply(sets):
            cont = c(sets, s)
            cont["args"] = fn(cont["args"])
        return apply

    def emptydir_state(sets):
        sts = hub_sts(sets["deploy_hub"])
        sts["spec"].pop("volumeClaimTemplates")
        sts["spec"]["template"]["spec"]["volumes"].append({"name": "state", "emptyDir": {}})

    def spec_of(s, path, value):
        def apply(sets):
            node = hub_sts(sets[s]) if s in HUBS else syncer(sets[s])
            *head, last = path
            for p in head:
                node = node.setdefault(p, {}) if isinstance(node, dict) else node[p]
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
        return apply

    def service(s, name, path, value):
        def apply(sets):
            node = one(sets[s], "Service", name)
            *head, last = path
            for p in head:
                node = node[p]
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
        return apply

    def drop(s, kind, name=None):
        def apply(sets):
            sets[s] = [d for d in sets[s] if not (d["kind"] == kind and (name is None or d["metadata"]["name"] == name))]
        return apply

    def add_rule(s, group, resource):
        def apply(sets):
            one(sets[s], "ClusterRole", "meshdns-syncer")["rules"].append({"apiGroups": [group], "resources": [resource], "verbs": ["get", "list", "watch"]})
        return apply

    def wrong_dial(sets):
        e = env(c(sets, "deploy_overlays_two-clusters_east-1"), "MESHDNS_REGISTRY")
        e["value"] = "https://meshdns.meshdns-system.svc:7443"

    def ca_key_in_member(sets):
        import base64
        secret = one(sets["deploy_overlays_two-clusters_east-1"], "Secret", "meshdns-syncer-tls")
        secret["data"]["tls.key"] = base64.b64encode((ROOT / "deploy/overlays/two-clusters/ca/ca.key").read_bytes()).decode()

    def podmonitor_port(sets):
        one(sets["deploy_overlays_two-clusters_hub"], "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] = "grpc"

    def psa(sets):
        del one(sets["deploy_hub"], "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]

    def np_open(sets):
        p = one(sets["deploy_hub"], "NetworkPolicy", "meshdns")
        p["spec"]["ingress"][1]["from"] = [{"podSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}]
        p["spec"]["ingress"][1]["from"] = [{"namespaceSelector": {}}]

    def image_tag(sets):
        c(sets, "helm_hub")["image"] = "example.invalid/meshdns:latest"

    def chart_drift(sets):
        c(sets, "helm_two-clusters-east-1")["args"].remove("--mcs")
        one(sets["helm_two-clusters-east-1"], "ClusterRole", "meshdns-syncer-mcs")["rules"] = []

    def no_status_rbac(sets):
        one(sets["deploy_overlays_two-clusters_east-1"], "ClusterRole", "meshdns-syncer-mcs-status")["rules"][1]["verbs"] = []

    def add_write(s, group, resource, verb):
        def apply(sets):
            one(sets[s], "ClusterRole", "meshdns-syncer")["rules"].append(
                {"apiGroups": [group], "resources": [resource], "verbs": [verb]})
        return apply

    def bad_cr(sets):
        one(sets["deploy_overlays_cert-manager_hub"], "Certificate", "meshdns-tls")["spec"]["usages"] = ["server-auth"]

    return [
        ("state on an emptyDir", check_state_volume, emptydir_state),
        ("no --ready-wait-data", check_readiness_gating, set_args("deploy_hub", lambda a: [x for x in a if x != "--ready-wait-data"])),
        ("no minReadySeconds", check_readiness_gating, spec_of("helm_hub", ["spec", "minReadySeconds"], None)),
        ("gRPC Service hides unready replicas", check_readiness_gating, service("deploy_hub", "meshdns-0-grpc", ["spec", "publishNotReadyAddresses"], None)),
        ("no startupProbe", check_readiness_gating, lambda sets: c(sets, "deploy_hub").pop("startupProbe")),
        ("no preStop", check_pre_stop, lambda sets: c(sets, "deploy_hub").pop("lifecycle")),
        ("grace period too short", check_pre_stop, spec_of("helm_hub", ["spec", "template", "spec", "terminationGracePeriodSeconds"], 12)),
        ("no zone spread", check_spread, spec_of("deploy_hub", ["spec", "template", "spec", "topologySpreadConstraints"], [])),
        ("no priority class", check_priority_and_resources, spec_of("deploy_member", ["spec", "template", "spec", "priorityClassName"], None)),
        ("memory request under limit", check_priority_and_resources, lambda sets: c(sets, "deploy_hub")["resources"]["requests"].update(memory="128Mi")),
        ("workers not tied to CPU", check_priority_and_resources, lambda sets: c(sets, "helm_hub").pop("env")),
        ("syncer Recreate", check_syncer_rollout, spec_of("deploy_member", ["spec", "strategy"], {"type": "Recreate"})),
        ("DNS on a ClusterIP", check_exposure, service("deploy_hub", "meshdns", ["spec", "type"], "ClusterIP")),
        ("DNS rewrites sources", check_exposure, service("helm_hub", "meshdns", ["spec", "externalTrafficPolicy"], "Cluster")),
        ("gRPC rewrites sources", check_exposure, service("helm_two-clusters-hub", "meshdns-1-grpc", ["spec", "externalTrafficPolicy"], None)),
        ("gRPC open to the internet", check_exposure, service("deploy_hub", "meshdns-1-grpc", ["spec", "loadBalancerSourceRanges"], ["0.0.0.0/0"])),
        ("no hub NetworkPolicy", check_network_policies, drop("deploy_hub", "NetworkPolicy")),
        ("gRPC from any namespace", check_network_policies, np_open),
        ("no syncer NetworkPolicy", check_network_policies, drop("helm_two-clusters-west-1", "NetworkPolicy")),
        ("no PodMonitor", check_monitors, drop("deploy_overlays_two-clusters_east-1", "PodMonitor")),
        ("PodMonitor on the wrong port", check_monitors, podmonitor_port),
        ("member owns the namespace", check_namespace_ownership, lambda sets: sets["deploy_member"].append(copy.deepcopy(one(sets["deploy_hub"], "Namespace")))),
        ("no pod-security label", check_pod_security, psa),
        ("writable root filesystem", check_pod_security, lambda sets: c(sets, "deploy_member")["securityContext"].update(readOnlyRootFilesystem=False)),
        ("governing Service not headless", check_headless, service("deploy_hub", "meshdns-headless", ["spec", "clusterIP"], None)),
        ("RBAC for namespaces without the flag", check_rbac, add_rule("deploy_member", "", "namespaces")),
        ("RBAC for ServiceExports without --mcs", check_rbac, add_rule("helm_cert-manager-east-1", "multicluster.x-k8s.io", "serviceexports")),
        ("--mcs without its CRD", check_mcs_crds, drop("deploy_overlays_two-clusters_east-1", "CustomResourceDefinition")),
        ("--mcs-status without its write RBAC", check_rbac, no_status_rbac),
        ("a write RBAC grants beyond --mcs-status", check_rbac, add_write("helm_two-clusters-east-1", "", "services", "update")),
        ("--mcs-status without the ServiceImport CRD", check_mcs_crds, lambda sets: sets["helm_two-clusters-east-1"].remove(
            one(sets["helm_two-clusters-east-1"], "CustomResourceDefinition", "serviceimports.multicluster.x-k8s.io"))),
        ("CA key in a member", check_no_ca_key, ca_key_in_member),
        ("syncer dials a name not in the certificate", check_san_consistency, wrong_dial),
        ("cert-manager certificate lacks a dialed name", check_san_consistency, lambda sets: one(sets["deploy_overlays_cert-manager_hub"], "Certificate", "meshdns-tls")["spec"]["dnsNames"].pop(0)),
        ("image tag not the crate version", check_image, image_tag),
        ("invalid cert-manager usage", check_custom_resources, bad_cr),
        ("chart drifts from Kustomize", check_parity, chart_drift),
        ("no edge follower", check_edge, drop("deploy_overlays_two-clusters_east-1", "Deployment", "meshdns-edge")),
        ("edge follower left in the hub-only shape", check_edge, lambda sets: sets["deploy_overlays_hub-only-member"].append(copy.deepcopy(edge(sets["deploy_member"])))),
        ("one edge follower", check_edge, lambda sets: edge(sets["helm_two-clusters-west-1"])["spec"].update(replicas=1)),
        ("edge follower without a reader credential", check_edge, lambda sets: container(edge(sets["deploy_member"])).update(args=[a for a in container(edge(sets["deploy_member"]))["args"] if not a.startswith("--follow-tls-cert")])),
        ("no edge PodDisruptionBudget", check_edge, drop("deploy_member", "PodDisruptionBudget", "meshdns-edge")),
        ("edge DNS Service without TCP", check_edge, lambda sets: one(sets["deploy_member"], "Service", "meshdns-edge")["spec"]["ports"].pop()),
        ("edge follower with a writable root", check_pod_security, lambda sets: container(edge(sets["helm_cert-manager-east-1"]))["securityContext"].update(readOnlyRootFilesystem=False)),
        ("edge follower without a priority class", check_priority_and_resources, lambda sets: edge(sets["deploy_member"])["spec"]["template"]["spec"].pop("priorityClassName")),
        ("CoreDNS forwards elsewhere than the edge Service", check_coredns_snippet, lambda sets: one(sets["deploy_member"], "Service", "meshdns-edge")["spec"].update(clusterIP="10.96.0.99")),
        ("edge follows a name not in the certificate", check_san_consistency, lambda sets: env(container(edge(sets["deploy_overlays_two-clusters_west-1"])), "MESHDNS_FOLLOW").update(value="https://hub.elsewhere.example:7443")),
    ]


def main():
    rendered = sys.argv[1]
    sets = load(rendered)
    failed = False
    for check in CHECKS:
        problems = check(sets)
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {check.__doc__.splitlines()[0]}")
        for p in problems:
            print(f"       {p}", file=sys.stderr)
        failed |= bool(problems)
    if "--self-test" in sys.argv:
        for fault, check, apply in mutations():
            broken = copy.deepcopy(sets)
            apply(broken)
            if check(broken):
                print(f"ok   self-test: {check.__name__} catches {fault}")
            else:
                print(f"FAIL self-test: {check.__name__} misses {fault}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
