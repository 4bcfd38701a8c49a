"""Project rules (policy), checked on each rendered kustomization: what they are is
point 3 of the package's docstring (`tools/k8s_check/__init__.py`).

Each rule is a generator of `Check`s (and `Note`s), in the order they are
reported. Rules come in scopes; `policy()` runs, in order, the rules of POLICY,
some of which run the rules of a narrower scope over each object:

  POLICY                    (m)                  the whole rendered output
  POD_RULES                 (m, d)               each Deployment, first
  CONTAINER_RULES           (m, d, c)            each container, init ones included
  SERVING_CONTAINER_RULES   (m, d, c)            each container, init ones excluded
  DEPLOYMENT_RULES          (m, d)               each Deployment, last
  TRIGGER_RULES             (m, so, i, trig)     each rabbitmq trigger of a ScaledObject
  ALERT_RULES               (m, rule)            each rule of a PrometheusRule

A new rule is a function plus one line in its list. Standard library only
(PromQL is parsed by promql-parser, imported when first used).
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from typing import Callable, Iterator

from .bootstrap import ROOT
from .ingress import GRPC_ROUTES, documented_routes, ingress_errors, is_grpc_ingress
from .objects import (QUANTITY_RE, Check, Note, containers, http_get, name_of, pod_spec, selects,
                      sysctl_conf)
from .promql import metric_names, promql_error, unknown_metrics

Result = Iterator["Check | Note"]


class Rendered:
    """One kustomization's rendered objects, indexed for the rules."""

    def __init__(self, label: str, docs: list[dict]) -> None:
        self.label = label
        self.docs = docs
        self.by_kind: dict[str, list[dict]] = {}
        for o in docs:
            self.by_kind.setdefault(o["kind"], []).append(o)
        self.deployments = {o["metadata"]["name"]: o for o in self.kind("Deployment")}
        self.services = self.kind("Service")
        self.configmaps = {o["metadata"]["name"]: o for o in self.kind("ConfigMap")}
        self.secrets = {o["metadata"]["name"]: o for o in self.kind("Secret")}
        # Every policy check is named `<label>: policy …`.
        self.P = f"{label}: policy"

    def kind(self, kind: str) -> list[dict]:
        return self.by_kind.get(kind, [])

    @property
    def config_maps(self) -> list[dict]:
        """The visionq-config ConfigMaps (kustomize may suffix a hash to the name)."""
        return [c for n, c in self.configmaps.items() if n.startswith("visionq-config")]

    @cached_property
    def cfg(self) -> dict[str, str]:
        """The settings of the one visionq-config ConfigMap."""
        return self.config_maps[0].get("data", {})

    @property
    def prefix(self) -> str:
        return self.cfg.get("VISIONQ_QUEUE_PREFIX", "visionq")

    @property
    def shutdown_s(self) -> float:
        return int(self.cfg.get("VISIONQ_SHUTDOWN_TIMEOUT_MS", "20000")) / 1000

    @property
    def infer_input(self) -> str:
        return self.cfg.get("VISIONQ_INFER_INPUT", "tensors")

    @property
    def provider(self) -> str:
        return self.cfg.get("VISIONQ_EXECUTION_PROVIDER", "cpu")

    @cached_property
    def metrics(self) -> tuple[set[str], set[str]]:
        """(metric names, histogram names) of contract/src/metrics.rs."""
        return metric_names()

    def secret_keys(self, name: str) -> set[str]:
        s = self.secrets.get(name, {})
        return set(s.get("stringData", {})) | set(s.get("data", {}))


def check(cond: bool, what: str, why: str) -> Check:
    """A Check that passes when `cond` is true (the order of Tally.check's arguments)."""
    return Check(what, bool(cond), why)


def _w(m: Rendered, d: dict) -> str:
    return f"{m.P} {d['metadata']['name']}"


def _cw(m: Rendered, d: dict, c: dict) -> str:
    return f"{_w(m, d)}/{c['name']}"


# ─── the gate: everything else reads the one ConfigMap ────────────────────────

def one_visionq_config(m: Rendered) -> Result:
    """Exactly one visionq-config ConfigMap is rendered: the other rules read the
    settings (queue prefix, shutdown budget, infer input, provider) from it, and
    two would leave the roles' configuration ambiguous."""
    n = len(m.config_maps)
    yield check(n == 1, f"{m.P} one visionq-config ConfigMap", f"found {n}")


# ─── each Deployment: the pod ─────────────────────────────────────────────────

def pod_runs_as_non_root(m: Rendered, d: dict) -> Result:
    """The pod's securityContext sets runAsNonRoot: true, so the kubelet refuses to
    start an image that would run as root."""
    sc = pod_spec(d).get("securityContext", {})
    yield check(sc.get("runAsNonRoot") is True, f"{_w(m, d)} runAsNonRoot",
                "pod securityContext.runAsNonRoot is not true")


def pod_runs_as_nonzero_uid(m: Rendered, d: dict) -> Result:
    """The pod's securityContext names a non-zero runAsUser: runAsNonRoot alone
    cannot verify an image whose USER is a name rather than a number."""
    sc = pod_spec(d).get("securityContext", {})
    yield check(isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, f"{_w(m, d)} runAsUser",
                "pod securityContext.runAsUser is not a non-zero UID")


def pod_has_no_api_token(m: Rendered, d: dict) -> Result:
    """automountServiceAccountToken is false: no role talks to the Kubernetes API,
    so none should hold a token for it."""
    yield check(pod_spec(d).get("automountServiceAccountToken") is False, f"{_w(m, d)} no API token",
                "automountServiceAccountToken is not false")


# ─── each container, init containers included ─────────────────────────────────

def container_seccomp_runtime_default(m: Rendered, d: dict, c: dict) -> Result:
    """The container (or, failing that, its pod) uses the RuntimeDefault seccomp
    profile, which the restricted Pod Security Standard requires."""
    csc = c.get("securityContext", {})
    sc = pod_spec(d).get("securityContext", {})
    seccomp = (csc.get("seccompProfile") or sc.get("seccompProfile") or {}).get("type")
    yield check(seccomp == "RuntimeDefault", f"{_cw(m, d, c)} seccomp",
                f"seccompProfile is {seccomp!r}, not RuntimeDefault")


def container_read_only_root(m: Rendered, d: dict, c: dict) -> Result:
    """readOnlyRootFilesystem is true: the roles write only to their volumes."""
    csc = c.get("securityContext", {})
    yield check(csc.get("readOnlyRootFilesystem") is True, f"{_cw(m, d, c)} read-only root",
                "readOnlyRootFilesystem is not true")


def container_no_privilege_escalation(m: Rendered, d: dict, c: dict) -> Result:
    """allowPrivilegeEscalation is false (restricted Pod Security Standard)."""
    csc = c.get("securityContext", {})
    yield check(csc.get("allowPrivilegeEscalation") is False, f"{_cw(m, d, c)} no privilege escalation",
                "allowPrivilegeEscalation is not false")


def container_drops_all_capabilities(m: Rendered, d: dict, c: dict) -> Result:
    """capabilities.drop contains ALL (restricted Pod Security Standard)."""
    csc = c.get("securityContext", {})
    yield check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), f"{_cw(m, d, c)} drop ALL",
                "capabilities.drop does not contain ALL")


def container_has_resources(m: Rendered, d: dict, c: dict) -> Result:
    """requests.cpu, requests.memory and limits.memory are set: the scheduler needs
    the requests, and a memory limit keeps one role from starving the node."""
    res = c.get("resources", {})
    yield check(all(k in res.get("requests", {}) for k in ("cpu", "memory")) and "memory" in res.get("limits", {}),
                f"{_cw(m, d, c)} resources", "needs requests.cpu, requests.memory and limits.memory")


def container_resource_quantities(m: Rendered, d: dict, c: dict) -> Result:
    """Every request and limit is a Kubernetes quantity: the schemas accept any
    string as a quantity; the API server does not."""
    res = c.get("resources", {})
    bad_q = [f"{kind}.{k}={v!r}" for kind in ("requests", "limits")
             for k, v in (res.get(kind) or {}).items() if not QUANTITY_RE.match(str(v))]
    yield check(not bad_q, f"{_cw(m, d, c)} resource quantities", f"not Kubernetes quantities: {', '.join(bad_q)}")


def container_image_pinned(m: Rendered, d: dict, c: dict) -> Result:
    """The image has a digest, or a tag other than :latest, so a rollout runs the
    image that was tested."""
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    yield check(("@sha256:" in image) or (":" in tag and not tag.endswith(":latest")), f"{_cw(m, d, c)} pinned image",
                f"image {image!r} has no tag or uses :latest")


# ─── each serving container (init containers excluded) ───────────────────────

def container_http_port(m: Rendered, d: dict, c: dict) -> Result:
    """A port named http on 8080, where every role listens (VISIONQ_LISTEN); the
    Services and ServiceMonitors refer to it by that name."""
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    yield check(ports.get("http") == 8080, f"{_cw(m, d, c)} port http",
                "needs a port named http on 8080 (VISIONQ_LISTEN)")


def probes_on_livez_and_readyz(m: Rendered, d: dict, c: dict) -> Result:
    """Liveness (and startup, if any) probes /livez and readiness probes /readyz, the
    routes every role serves for them: /readyz answers 503 while the role cannot
    work (broker unreachable, database down, model not loaded), so the pod leaves
    the Service's endpoints instead of being restarted; /livez stays 200 while the
    process is alive (docs/OPERATIONS.md)."""
    cw = _cw(m, d, c)
    yield check(http_get(c.get("livenessProbe"))[0] == "/livez", f"{cw} liveness /livez",
                "livenessProbe is not an httpGet of /livez")
    yield check(http_get(c.get("readinessProbe"))[0] == "/readyz", f"{cw} readiness /readyz",
                "readinessProbe is not an httpGet of /readyz")
    if c.get("startupProbe"):
        yield check(http_get(c.get("startupProbe"))[0] == "/livez", f"{cw} startup /livez",
                    "startupProbe is not an httpGet of /livez")


def writable_tmp(m: Rendered, d: dict, c: dict) -> Result:
    """/tmp is an emptyDir mount: the root filesystem is read-only
    (container_read_only_root), so /tmp is writable only through a volume."""
    tmp_volumes = {v["name"] for v in pod_spec(d).get("volumes", []) if "emptyDir" in v}
    mounts = {mt["mountPath"]: mt["name"] for mt in c.get("volumeMounts", [])}
    yield check(mounts.get("/tmp") in tmp_volumes, f"{_cw(m, d, c)} writable /tmp", "/tmp is not an emptyDir mount")


# ─── each Deployment: the role around its pods ────────────────────────────────

def grace_period_covers_shutdown(m: Rendered, d: dict) -> Result:
    """terminationGracePeriodSeconds >= the longest preStop sleep +
    VISIONQ_SHUTDOWN_TIMEOUT_MS + 5 s: otherwise the kubelet kills a role that is
    still draining, and in-flight messages are redelivered."""
    ps = pod_spec(d)
    sleep_s = 0
    for c in containers(d, init=False):
        sleep_s = max(sleep_s, ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
    grace = ps.get("terminationGracePeriodSeconds", 30)
    need = sleep_s + m.shutdown_s + 5
    yield check(grace >= need, f"{_w(m, d)} grace period",
                f"terminationGracePeriodSeconds {grace} < preStop {sleep_s} s"
                f" + VISIONQ_SHUTDOWN_TIMEOUT_MS {m.shutdown_s:g} s + 5 s margin")


def _pod_labels(d: dict) -> dict:
    return d["spec"]["template"]["metadata"].get("labels", {})


def selector_matches_pod_labels(m: Rendered, d: dict) -> Result:
    """The Deployment's selector selects its own pod template (the API server
    refuses it otherwise; an overlay's label change can break it)."""
    yield check(selects(d["spec"]["selector"], _pod_labels(d)), f"{_w(m, d)} selector",
                "selector does not match the pod labels")


def one_pdb_per_role(m: Rendered, d: dict) -> Result:
    """Exactly one PodDisruptionBudget selects the role's pods: none lets a node
    drain take every replica at once, two make the eviction API refuse evictions."""
    labels = _pod_labels(d)
    pdbs = [p for p in m.kind("PodDisruptionBudget") if selects(p["spec"].get("selector", {}), labels)]
    yield check(len(pdbs) == 1, f"{_w(m, d)} PodDisruptionBudget", f"{len(pdbs)} PDBs select its pods (want 1)")


def _http_services(m: Rendered, d: dict) -> list[dict]:
    labels = _pod_labels(d)
    return [s for s in m.services if selects(s["spec"].get("selector", {}), labels)
            and any(p.get("name") == "http" and p.get("targetPort") == "http" for p in s["spec"].get("ports", []))]


def role_has_http_service(m: Rendered, d: dict) -> Result:
    """A Service with a port named http (to targetPort http) selects the role's pods:
    the Ingress, the dashboard and Prometheus reach the role through it."""
    yield check(bool(_http_services(m, d)), f"{_w(m, d)} Service", "no Service with an `http` port selects its pods")


def role_is_scraped(m: Rendered, d: dict) -> Result:
    """A ServiceMonitor scrapes the http port of the role's Service, so every
    role's /metrics reaches Prometheus (and the alerts)."""
    monitors = [mon for mon in m.kind("ServiceMonitor") for s in _http_services(m, d)
                if selects(mon["spec"].get("selector", {}), s["metadata"].get("labels", {}))
                and any(e.get("port") == "http" for e in mon["spec"].get("endpoints", []))]
    yield check(bool(monitors), f"{_w(m, d)} scraped", "no ServiceMonitor scrapes its Service's http port")


def config_references_resolve(m: Rendered, d: dict) -> Result:
    """Every ConfigMap of an envFrom and every Secret key of a secretKeyRef is
    rendered: a missing one leaves the pod in CreateContainerConfigError."""
    w = _w(m, d)
    for c in containers(d):
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                n = ef["configMapRef"]["name"]
                yield check(n in m.configmaps, f"{w}/{c['name']} ConfigMap {n}", "not in the rendered output")
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield check(ref["key"] in m.secret_keys(ref["name"]),
                            f"{w}/{c['name']} secret {ref['name']}/{ref['key']}",
                            "secret or key not in the rendered output")


POD_RULES: list[Callable[[Rendered, dict], Result]] = [
    pod_runs_as_non_root,
    pod_runs_as_nonzero_uid,
    pod_has_no_api_token,
]
CONTAINER_RULES: list[Callable[[Rendered, dict, dict], Result]] = [
    container_seccomp_runtime_default,
    container_read_only_root,
    container_no_privilege_escalation,
    container_drops_all_capabilities,
    container_has_resources,
    container_resource_quantities,
    container_image_pinned,
]
SERVING_CONTAINER_RULES: list[Callable[[Rendered, dict, dict], Result]] = [
    container_http_port,
    probes_on_livez_and_readyz,
    writable_tmp,
]
DEPLOYMENT_RULES: list[Callable[[Rendered, dict], Result]] = [
    grace_period_covers_shutdown,
    selector_matches_pod_labels,
    one_pdb_per_role,
    role_has_http_service,
    role_is_scraped,
    config_references_resolve,
]


def each_deployment(m: Rendered) -> Result:
    """Runs POD_RULES, CONTAINER_RULES, SERVING_CONTAINER_RULES and DEPLOYMENT_RULES
    over every Deployment, in that order, one Deployment at a time."""
    for d in m.deployments.values():
        for rule in POD_RULES:
            yield from rule(m, d)
        for c in containers(d):
            for crule in CONTAINER_RULES:
                yield from crule(m, d, c)
        for c in containers(d, init=False):
            for crule in SERVING_CONTAINER_RULES:
                yield from crule(m, d, c)
        for rule in DEPLOYMENT_RULES:
            yield from rule(m, d)


# ─── the whole rendered output ────────────────────────────────────────────────

def dashboard_metrics_urls_name_services(m: Rendered) -> Result:
    """Each URL of VISIONQ_DASHBOARD_METRICS_URLS is http://<Service>[:port]/ of a
    rendered Service and one of its ports: the dashboard scrapes the roles there."""
    svc_ports = {s["metadata"]["name"]: {p.get("port") for p in s["spec"].get("ports", [])} for s in m.services}
    for url in filter(None, (u.strip() for u in m.cfg.get("VISIONQ_DASHBOARD_METRICS_URLS", "").split(","))):
        mt = re.match(r"^http://([a-z0-9-]+)(?::(\d+))?/", url)
        ok = bool(mt) and mt.group(1) in svc_ports and int(mt.group(2) or 80) in svc_ports[mt.group(1)]
        yield check(ok, f"{m.P} dashboard metrics URL {url}", "no rendered Service with that name and port")


def http_ingress_routes_documented_paths(m: Rendered) -> Result:
    """One entry point: exactly one HTTP Ingress, whose backends are rendered Service
    ports and which sends every path of docs/openapi.json to the role that serves
    it (by the path's tag), as ingress-nginx would match it."""
    ingresses = [i for i in m.kind("Ingress") if not is_grpc_ingress(i)]
    yield check(len(ingresses) == 1, f"{m.P} one HTTP Ingress", f"found {len(ingresses)}")
    if len(ingresses) == 1:
        routes = documented_routes()
        errs = ingress_errors(ingresses[0], m.services, routes)
        yield check(not errs, f"{m.P} {name_of(ingresses[0])} routes {len(routes)} documented paths to their roles",
                    "; ".join(errs))


def grpc_ingresses_route_to_ingest(m: Rendered) -> Result:
    """Every Ingress of gRPC (backend-protocol GRPC) sends each gRPC method
    (GRPC_ROUTES) to ingest, through a rendered Service port."""
    for g in (i for i in m.kind("Ingress") if is_grpc_ingress(i)):
        errs = ingress_errors(g, m.services, GRPC_ROUTES)
        yield check(not errs, f"{m.P} {name_of(g)} routes the gRPC services to ingest", "; ".join(errs))


def autoscalers_own_replicas(m: Rendered) -> Result:
    """Every HorizontalPodAutoscaler and ScaledObject targets a rendered Deployment,
    and that Deployment sets no spec.replicas: every apply would reset what the
    autoscaler chose."""
    scaled: dict[str, str] = {}
    for h in m.kind("HorizontalPodAutoscaler"):
        scaled[h["spec"]["scaleTargetRef"]["name"]] = name_of(h)
    for so in m.kind("ScaledObject"):
        scaled[so["spec"]["scaleTargetRef"]["name"]] = name_of(so)
    for target, by in scaled.items():
        exists = target in m.deployments
        yield check(exists, f"{m.P} {by} target", f"Deployment {target} is not rendered")
        if exists:
            yield check("replicas" not in m.deployments[target]["spec"], f"{m.P} {target} replicas left to {by}",
                        "spec.replicas is set: every apply would reset what the autoscaler chose")


def _trigger_w(m: Rendered, so: dict, i: int) -> str:
    return f"{m.P} {name_of(so)} trigger {i}"


def trigger_watches_consumed_queue(m: Rendered, so: dict, i: int, trig: dict) -> Result:
    """A KEDA rabbitmq trigger watches the queue its target consumes, under the
    configured prefix: preprocess reads <prefix>.frames, infer reads
    <prefix>.frames with inline preprocessing (VISIONQ_INFER_INPUT=frames), else
    <prefix>.tensors. Watching another queue scales on the wrong backlog."""
    target = so["spec"]["scaleTargetRef"]["name"]
    consumes = {"visionq-preprocess": f"{m.prefix}.frames",
                "visionq-infer": f"{m.prefix}.{'frames' if m.infer_input == 'frames' else 'tensors'}"}
    md = trig.get("metadata", {})
    want = consumes.get(target)
    yield check(md.get("queueName") == want, f"{_trigger_w(m, so, i)} queue",
                f"watches {md.get('queueName')!r}; {target} consumes {want!r}")


def trigger_counts_queue_length(m: Rendered, so: dict, i: int, trig: dict) -> Result:
    """A KEDA rabbitmq trigger scales on QueueLength with a positive value (messages
    per replica)."""
    md = trig.get("metadata", {})
    yield check(md.get("mode") == "QueueLength" and float(md.get("value", "0")) > 0, f"{_trigger_w(m, so, i)} mode",
                "want mode QueueLength with a positive value")


def trigger_auth_resolves(m: Rendered, so: dict, i: int, trig: dict) -> Result:
    """A KEDA rabbitmq trigger's TriggerAuthentication is rendered, and every Secret
    key it reads is rendered: otherwise KEDA cannot reach the broker and the role
    never scales."""
    w = _trigger_w(m, so, i)
    auths = {a["metadata"]["name"]: a for a in m.kind("TriggerAuthentication")}
    ref = (trig.get("authenticationRef") or {}).get("name")
    a = auths.get(ref)
    yield check(a is not None, f"{w} auth", f"TriggerAuthentication {ref!r} not rendered")
    if a is not None:
        for st in a["spec"].get("secretTargetRef", []):
            yield check(st["key"] in m.secret_keys(st["name"]), f"{w} auth secret {st['name']}/{st['key']}",
                        "secret or key not rendered")


TRIGGER_RULES: list[Callable[[Rendered, dict, int, dict], Result]] = [
    trigger_watches_consumed_queue,
    trigger_counts_queue_length,
    trigger_auth_resolves,
]


def each_rabbitmq_trigger(m: Rendered) -> Result:
    """Runs TRIGGER_RULES over every trigger of type rabbitmq of every ScaledObject."""
    for so in m.kind("ScaledObject"):
        for i, trig in enumerate(so["spec"].get("triggers", [])):
            if trig.get("type") != "rabbitmq":
                continue
            for rule in TRIGGER_RULES:
                yield from rule(m, so, i, trig)


def preprocess_matches_infer_input(m: Rendered) -> Result:
    """Inline preprocessing (VISIONQ_INFER_INPUT=frames) has no preprocess
    Deployment, which would compete with infer for the frames queue; tensors input
    needs one to produce the tensors."""
    if m.infer_input == "frames":
        yield check("visionq-preprocess" not in m.deployments, f"{m.P} inline preprocessing",
                    "VISIONQ_INFER_INPUT=frames but a preprocess Deployment would compete for the frames queue")
    else:
        yield check("visionq-preprocess" in m.deployments, f"{m.P} preprocess workers",
                    "VISIONQ_INFER_INPUT=tensors but no preprocess Deployment produces tensors")


def infer_deployment_rendered(m: Rendered) -> Result:
    """The infer Deployment is rendered (the rules after this one check it)."""
    yield check("visionq-infer" in m.deployments, f"{m.P} infer Deployment", "not rendered")


def infer_gpu_matches_provider(m: Rendered) -> Result:
    """GPU iff CUDA: with VISIONQ_EXECUTION_PROVIDER=cuda the infer container has a
    nvidia.com/gpu limit and the pod a nodeSelector and tolerations for GPU nodes;
    with any other provider it requests no GPU."""
    infer = m.deployments.get("visionq-infer")
    if infer is None:
        return
    c = pod_spec(infer)["containers"][0]
    gpu_limit = str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    gpus = int(gpu_limit) if gpu_limit.isdigit() else 0
    if m.provider == "cuda":
        yield check(gpus >= 1, f"{m.P} infer GPU", "VISIONQ_EXECUTION_PROVIDER=cuda without a nvidia.com/gpu limit")
        yield check(bool(pod_spec(infer).get("tolerations")) and bool(pod_spec(infer).get("nodeSelector")),
                    f"{m.P} infer on GPU nodes", "needs a nodeSelector and tolerations for GPU nodes")
    else:
        yield check(gpus == 0, f"{m.P} infer CPU", f"VISIONQ_EXECUTION_PROVIDER={m.provider} but a GPU is requested")


def infer_model_mounted(m: Rendered) -> Result:
    """The directory of VISIONQ_MODEL is a volume mount of the infer container: the
    model file arrives through that volume (an init container copies it from the
    model image), not in the role's image."""
    infer = m.deployments.get("visionq-infer")
    if infer is None:
        return
    c = pod_spec(infer)["containers"][0]
    model = m.cfg.get("VISIONQ_MODEL", "")
    mounts = {mt["mountPath"] for mt in c.get("volumeMounts", [])}
    yield check(os.path.dirname(model) in mounts, f"{m.P} model mounted",
                f"VISIONQ_MODEL={model!r} is not under a volume mount of the infer container")


def queue_limits_match_definitions(m: Rendered) -> Result:
    """With the default prefix, VISIONQ_{FRAMES,TENSORS,RESULTS}_MAX_LENGTH and
    VISIONQ_MAX_DELIVERIES equal the x-max-length and x-delivery-limit of
    rabbitmq/definitions.json: the roles declare the queues from these settings,
    and a mismatch fails the declaration with PRECONDITION_FAILED."""
    defs = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    queues = {q["name"]: q.get("arguments", {}) for q in defs.get("queues", [])}
    if m.prefix == "visionq":
        for q in ("frames", "tensors", "results"):
            args = queues.get(f"visionq.{q}", {})
            key = f"VISIONQ_{q.upper()}_MAX_LENGTH"
            yield check(str(args.get("x-max-length")) == m.cfg.get(key), f"{m.P} {key}",
                        f"{m.cfg.get(key)} in the ConfigMap, {args.get('x-max-length')} in rabbitmq/definitions.json")
            yield check(str(args.get("x-delivery-limit")) == m.cfg.get("VISIONQ_MAX_DELIVERIES"),
                        f"{m.P} VISIONQ_MAX_DELIVERIES vs visionq.{q}",
                        f"{m.cfg.get('VISIONQ_MAX_DELIVERIES')} in the ConfigMap, "
                        f"{args.get('x-delivery-limit')} in definitions.json")


def rabbitmq_config_matches_conf(m: Rendered) -> Result:
    """Every RabbitmqCluster's additionalConfig holds each setting of
    rabbitmq/rabbitmq.conf with the same value, except definitions.* (a boot-time
    import the operator owns: see k8s/base/rabbitmq.yaml)."""
    conf, _ = sysctl_conf((ROOT / "rabbitmq" / "rabbitmq.conf").read_text())
    for rc in m.kind("RabbitmqCluster"):
        have, _ = sysctl_conf((rc["spec"].get("rabbitmq") or {}).get("additionalConfig", ""))
        for k, v in conf.items():
            if k.startswith("definitions."):
                continue  # boot-time import: see k8s/base/rabbitmq.yaml
            yield check(have.get(k) == v, f"{m.P} {name_of(rc)} {k}",
                        f"rabbitmq/rabbitmq.conf has {v!r}, additionalConfig has {have.get(k)!r}")


def _rule_name(rule: dict) -> str:
    return rule.get("alert") or rule.get("record")


def alert_query_parses(m: Rendered, rule: dict) -> Result:
    """An alerting or recording rule's expr parses as PromQL."""
    err = promql_error(rule["expr"])
    yield check(err is None, f"{m.P} alert {_rule_name(rule)} PromQL", f"does not parse: {err}")


def alert_metrics_exist(m: Rendered, rule: dict) -> Result:
    """An alerting or recording rule names only visionq_* metrics of
    contract/src/metrics.rs (a histogram's _bucket/_sum/_count included): a renamed
    metric would otherwise leave an alert that never fires."""
    names, histograms = m.metrics
    bad = unknown_metrics(rule["expr"], names, histograms)
    yield check(not bad, f"{m.P} alert {_rule_name(rule)} metrics",
                f"not in contract/src/metrics.rs: {', '.join(sorted(set(bad)))}")


def alert_has_severity(m: Rendered, rule: dict) -> Result:
    """An alert (not a recording rule) has labels.severity info, warning or
    critical, so notification routing can match on one known set of values."""
    if "alert" in rule:
        yield check(rule.get("labels", {}).get("severity") in ("info", "warning", "critical"),
                    f"{m.P} alert {rule['alert']} severity", "needs labels.severity info|warning|critical")


ALERT_RULES: list[Callable[[Rendered, dict], Result]] = [
    alert_query_parses,
    alert_metrics_exist,
    alert_has_severity,
]


def each_alert(m: Rendered) -> Result:
    """Runs ALERT_RULES over every rule of every group of every PrometheusRule."""
    m.metrics  # read contract/src/metrics.rs once, up front, as before the split
    for r in m.kind("PrometheusRule"):
        for g in r["spec"]["groups"]:
            for rule in g["rules"]:
                for arule in ALERT_RULES:
                    yield from arule(m, rule)


def dashboards_query_known_metrics(m: Rendered) -> Result:
    """Every Grafana dashboard (a ConfigMap labelled grafana_dashboard=1) is JSON,
    has queries, each query parses as PromQL, and they name only visionq_* metrics
    of contract/src/metrics.rs."""
    names, histograms = m.metrics
    for cm in m.configmaps.values():
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            continue
        for fname, text in cm.get("data", {}).items():
            w = f"{m.P} dashboard {fname}"
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                yield Check(w, False, f"not JSON: {e}")
                continue
            exprs: list[str] = []

            def walk(x):
                if isinstance(x, dict):
                    if isinstance(x.get("expr"), str):
                        exprs.append(x["expr"])
                    for v in x.values():
                        walk(v)
                elif isinstance(x, list):
                    for v in x:
                        walk(v)
            walk(dash)
            for e in exprs:
                err = promql_error(e)
                if err is not None:
                    yield Check(f"{w} PromQL", False, f"{e!r} does not parse: {err}")
            bad = sorted({b for e in exprs for b in unknown_metrics(e, names, histograms)})
            yield check(bool(exprs) and not bad, f"{w} metrics ({len(exprs)} queries)",
                        f"not in contract/src/metrics.rs: {', '.join(bad)}" if bad else "no queries")


def placeholder_secrets_noted(m: Rendered) -> Result:
    """A Secret holding REPLACE_ME values is a template, not an error in the
    repository: say so (a note, neither passed nor failed)."""
    for s in m.secrets.values():
        vals = list((s.get("stringData") or {}).values())
        if any("REPLACE_ME" in str(v) for v in vals):
            yield Note(f"{m.label}: {name_of(s)} holds placeholder values "
                       "(a template; see docs/OPERATIONS.md, Deploying, step 2)")


# The rules over the whole output, in the order they are reported; the each_*
# entries run a narrower scope's list.
POLICY: list[Callable[[Rendered], Result]] = [
    each_deployment,
    dashboard_metrics_urls_name_services,
    http_ingress_routes_documented_paths,
    grpc_ingresses_route_to_ingest,
    autoscalers_own_replicas,
    each_rabbitmq_trigger,
    preprocess_matches_infer_input,
    infer_deployment_rendered,
    infer_gpu_matches_provider,
    infer_model_mounted,
    queue_limits_match_definitions,
    rabbitmq_config_matches_conf,
    each_alert,
    dashboards_query_known_metrics,
    placeholder_secrets_noted,
]


def policy(label: str, docs: list[dict]) -> Result:
    """Every check of every rule on one kustomization's objects, in order. Nothing
    after one_visionq_config runs unless it passes. A rule may raise KeyError,
    TypeError, ValueError, IndexError or AttributeError on objects not shaped as
    expected; the caller reports that."""
    m = Rendered(label, docs)
    gate = list(one_visionq_config(m))
    yield from gate
    if not all(c.ok for c in gate):
        return
    # A malformed setting (VISIONQ_SHUTDOWN_TIMEOUT_MS not a number) fails here,
    # before any rule reports.
    m.prefix, m.shutdown_s, m.infer_input, m.provider
    for rule in POLICY:
        yield from rule(m)


def problems(results) -> list[str]:
    """`what: why` of each failed Check among `results` (for tests and callers that
    want only the failures)."""
    return [r.problem for r in results if isinstance(r, Check) and not r.ok]
