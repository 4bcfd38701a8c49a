"""Small helpers over rendered objects (plain dicts), and the check records the
rules yield. Standard library only, so the rules' unit tests need no venv."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One check: `what` was checked; when not `ok`, `why` says what is wrong."""
    what: str
    ok: bool
    why: str = ""

    @property
    def problem(self) -> str | None:
        return None if self.ok else f"{self.what}: {self.why}"


@dataclass(frozen=True)
class Note:
    """A line printed as `note`, neither passed nor failed."""
    text: str


# apimachinery's resource.Quantity syntax.
QUANTITY_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def name_of(o: dict) -> str:
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


def sysctl_conf(text: str) -> tuple[dict[str, str], list[str]]:
    """`key = value` lines of a rabbitmq.conf, and the lines that are neither that nor comments."""
    conf, bad = {}, []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            bad.append(s)
            continue
        k, v = (x.strip() for x in s.split("=", 1))
        conf[k] = v
    return conf, bad


def pod_spec(o: dict) -> dict:
    return o["spec"]["template"]["spec"]


def containers(o: dict, init: bool = True) -> list[dict]:
    ps = pod_spec(o)
    return list(ps.get("containers", [])) + (list(ps.get("initContainers", [])) if init else [])


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", []) if "value" in e}


def selects(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def http_get(probe: dict | None) -> tuple[str | None, object]:
    g = (probe or {}).get("httpGet") or {}
    return g.get("path"), g.get("port")
