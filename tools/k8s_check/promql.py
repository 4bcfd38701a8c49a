"""Queries of the alerts and the Grafana dashboard: do they parse, and do they name
only visionq_* metrics defined in contract/src/metrics.rs."""

from __future__ import annotations

import re

from .bootstrap import ROOT


def metric_names() -> tuple[set[str], set[str]]:
    """(every visionq_* metric name, the histograms among them) of contract/src/metrics.rs."""
    src = (ROOT / "contract" / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(visionq_[a-z0-9_]+)"', src))
    histograms = set(re.findall(r'hist\(\s*"(visionq_[a-z0-9_]+)"', src))
    histograms |= set(re.findall(r'HistogramOpts::new\(\s*"(visionq_[a-z0-9_]+)"', src))
    return names, histograms


def unknown_metrics(expr: str, names: set[str], histograms: set[str]) -> list[str]:
    """The visionq_* names of `expr` that are neither a metric nor a histogram's _bucket/_sum/_count."""
    bad = []
    for tok in re.findall(r"\bvisionq_[a-z0-9_]+", expr):
        if tok in names:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", tok)
        if base in histograms and base != tok:
            continue
        bad.append(tok)
    return bad


def promql_error(expr: str) -> str | None:
    """None when `expr` parses as PromQL. Grafana's variables are given sample values."""
    import promql_parser  # from the tools venv; imported here so the rest needs no venv

    e = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    e = re.sub(r"\$\{?(\w+)\}?", r"\1", e)
    try:
        promql_parser.parse(e)
        return None
    except Exception as err:  # the binding raises a plain exception with the parser's message
        return str(err)
