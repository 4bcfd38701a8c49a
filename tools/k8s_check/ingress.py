"""Where the Ingresses send each path: every path of docs/openapi.json to the role
that serves it (by the path's tag), every gRPC method to ingest."""

from __future__ import annotations

import json
import re

from .bootstrap import ROOT

# The role that serves each documented path, by the OpenAPI tag of its operations
# ("process" routes are served by every role and so left out).
TAG_ROLE = {"ingest": "visionq-ingest", "results": "visionq-results", "dashboard": "visionq-results"}


def documented_routes() -> dict[str, str]:
    """Path (with `{parameter}` segments filled in) -> the Service that must receive it."""
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    routes = {}
    for path, item in doc["paths"].items():
        tags = {t for op in item.values() if isinstance(op, dict) for t in op.get("tags", [])}
        roles = {TAG_ROLE[t] for t in tags if t in TAG_ROLE}
        if len(roles) == 1:
            routes[re.sub(r"\{[^/}]+\}", "probe-1", path)] = roles.pop()
    return routes


# gRPC methods (`/<package.Service>/<Method>`, ingest/proto) -> the Service serving them.
GRPC_ROUTES = {
    "/visionq.v1.Detector/Detect": "visionq-ingest",
    "/visionq.v1.Detector/DetectStream": "visionq-ingest",
    "/grpc.health.v1.Health/Check": "visionq-ingest",
}


def is_grpc_ingress(ing: dict) -> bool:
    """An Ingress whose backends speak gRPC (ingress-nginx's backend-protocol)."""
    annotations = ing["metadata"].get("annotations") or {}
    return annotations.get("nginx.ingress.kubernetes.io/backend-protocol", "").upper() == "GRPC"


def ingress_route(ing: dict, host: str | None, path: str) -> str | None:
    """The Service `ing` sends `path` on `host` to, as ingress-nginx chooses: with
    `use-regex`, every path is a case-insensitive regular expression anchored at the
    start, tried longest first; without it, Exact, then the longest Prefix by
    segments (ImplementationSpecific as Prefix)."""
    regex = (ing["metadata"].get("annotations") or {}).get("nginx.ingress.kubernetes.io/use-regex") == "true"
    cands = []
    for rule in ing["spec"].get("rules", []):
        if rule.get("host") not in (None, host):
            continue
        for p in (rule.get("http") or {}).get("paths", []):
            cands.append((p.get("path", "/"), p.get("pathType"), p["backend"]["service"]["name"]))
    cands.sort(key=lambda c: len(c[0]), reverse=True)
    for want, kind, service in cands:
        if regex:
            hit = re.match(want, path, re.IGNORECASE) is not None
        elif kind == "Exact":
            hit = path == want
        else:
            segs, have = [x for x in want.split("/") if x], [x for x in path.split("/") if x]
            hit = have[: len(segs)] == segs
        if hit:
            return service
    default = (ing["spec"].get("defaultBackend") or {}).get("service", {}).get("name")
    return default


def ingress_errors(ing: dict, services: list[dict], routes: dict[str, str]) -> list[str]:
    """Every backend is a rendered Service port, and every documented path reaches its role."""
    errors = []
    ports = {s["metadata"]["name"]: {p.get("name") for p in s["spec"].get("ports", [])}
             | {p.get("port") for p in s["spec"].get("ports", [])} for s in services}
    for rule in ing["spec"].get("rules", []):
        for p in (rule.get("http") or {}).get("paths", []):
            svc = p["backend"]["service"]
            port = svc.get("port", {}).get("name", svc.get("port", {}).get("number"))
            if port not in ports.get(svc["name"], set()):
                errors.append(f"backend {svc['name']}:{port} of {p.get('path')} is not a rendered Service port")
    hosts = [r.get("host") for r in ing["spec"].get("rules", [])] or [None]
    for host in hosts:
        for path, want in routes.items():
            got = ingress_route(ing, host, path)
            if got != want:
                errors.append(f"{host or '*'}{path} goes to {got}, but {want} serves it")
    return errors
