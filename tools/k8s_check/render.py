"""Rendering: every kustomization under k8s/ through the pinned `kubectl kustomize`,
exactly as `kubectl apply -k` would. Runs inside the tools venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from .bootstrap import KUBECTL, ROOT, TOOLS_DIR

RENDERED = TOOLS_DIR / "rendered"


def kustomizations() -> list[Path]:
    """k8s/base, then every overlay, sorted."""
    dirs = [ROOT / "k8s" / "base"]
    dirs += sorted(p.parent for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
    return dirs


def render(d: Path, tally) -> list[dict] | None:
    """The objects `d` renders to (also written under .cache/k8s-tools/rendered/), or
    None when kustomize fails (recorded in `tally`)."""
    env = dict(os.environ, KUBECONFIG=os.devnull)
    r = subprocess.run([str(KUBECTL), "kustomize", str(d)], capture_output=True, text=True, env=env)
    rel = d.relative_to(ROOT)
    if r.returncode != 0:
        tally.fail(f"render {rel}", r.stderr.strip() or f"kubectl kustomize exited {r.returncode}")
        return None
    RENDERED.mkdir(parents=True, exist_ok=True)
    out = RENDERED / (str(rel).replace("/", "_") + ".yaml")
    out.write_text(r.stdout)
    docs = [x for x in yaml.safe_load_all(r.stdout) if x]
    tally.ok(f"render {rel} ({len(docs)} objects) -> {out.relative_to(ROOT)}")
    return docs


def patch_targets(d: Path, docs: list[dict], tally) -> None:
    """kustomize silently skips a `target:` patch that matches nothing (a renamed
    resource, a typo): every such patch must hit at least one rendered object."""
    k = yaml.safe_load((d / "kustomization.yaml").read_text()) or {}
    rel = d.relative_to(ROOT)
    for p in k.get("patches", []):
        t = p.get("target")
        if not t:
            continue
        hits = [o for o in docs
                if (not t.get("kind") or o.get("kind") == t["kind"])
                and (not t.get("name") or o["metadata"].get("name") == t["name"])
                and (not t.get("group") or o.get("apiVersion", "").startswith(t["group"] + "/"))]
        tally.check(bool(hits), f"{rel}: patch target {t}", "matches no rendered object (kustomize skips it silently)")
