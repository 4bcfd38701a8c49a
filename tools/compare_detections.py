#!/usr/bin/env python3
"""Compares two `visionq detect` JSON Lines outputs (e.g. CUDA against CPU):
for every image, every detection clearly above the threshold on one side has a
partner on the other: same class, IoU >= 0.9, score within 0.02. Where a model
chain ran (`[[chain]]`), each partner pair must carry the same chain output: the
same classification label or text, its score within 0.01.

    python3 tools/compare_detections.py A.jsonl B.jsonl [--conf 0.25]

Prints one line per image and exits non-zero when any detection has no partner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def load(path: str) -> dict[str, dict]:
    out = {}
    with open(path) as f:
        for line in f:
            v = json.loads(line)
            out[os.path.basename(v["path"])] = v
    return out


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def unmatched(xs: list, ys: list, conf: float) -> list:
    missing = []
    for d in xs:
        if d["score"] < conf + 0.02:
            continue  # near the threshold: may fall on either side of it
        if not any(
            e["class_name"] == d["class_name"]
            and iou(d["box_px"], e["box_px"]) >= 0.9
            and abs(e["score"] - d["score"]) <= 0.02
            for e in ys
        ):
            missing.append(d)
    return missing


def chain_differences(da: list, db: list, conf: float) -> tuple[int, int, float]:
    """Pairs compared, pairs whose chain output differs, and the largest score gap."""
    compared, differ, worst = 0, 0, 0.0
    for d in da:
        if d["score"] < conf + 0.02:
            continue
        best = max((e for e in db if e["class_name"] == d["class_name"]),
                   key=lambda e: iou(d["box_px"], e["box_px"]), default=None)
        if best is None:
            continue
        for key, field in (("classification", "label"), ("text", "value")):
            x, y = d.get(key), best.get(key)
            if x is None and y is None:
                continue
            compared += 1
            if x is None or y is None or x[field] != y[field]:
                print(f"  {d['class_name']} {key}: {x} against {y}")
                differ += 1
                continue
            gap = abs(x["score"] - y["score"])
            worst = max(worst, gap)
            if gap > 0.01:
                print(f"  {d['class_name']} {key} score: {x['score']} against {y['score']}")
                differ += 1
    return compared, differ, worst


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--conf", type=float, default=0.25)
    args = p.parse_args()
    a, b = load(args.a), load(args.b)
    bad = 0
    worst_score, worst_iou = 0.0, 1.0
    chained, chain_worst = 0, 0.0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in {'A' if name in a else 'B'}")
            bad += 1
            continue
        da, db = a[name].get("detections", []), b[name].get("detections", [])
        miss = unmatched(da, db, args.conf) + unmatched(db, da, args.conf)
        for d in da:
            best = max((e for e in db if e["class_name"] == d["class_name"]),
                       key=lambda e: iou(d["box_px"], e["box_px"]), default=None)
            if best is not None and d["score"] >= args.conf + 0.02:
                worst_iou = min(worst_iou, iou(d["box_px"], best["box_px"]))
                worst_score = max(worst_score, abs(d["score"] - best["score"]))
        classes = sorted({d["class_name"] for d in da})
        compared, differ, gap = chain_differences(da, db, args.conf)
        chained, chain_worst = chained + compared, max(chain_worst, gap)
        print(f"{name}: {len(da)} vs {len(db)} detections, classes {classes}, unmatched {len(miss)}"
              + (f", chain outputs {compared} compared, {differ} differ" if compared else ""))
        bad += len(miss) + differ
    print(f"worst matched IoU {worst_iou:.4f}, worst score difference {worst_score:.4f}; {bad} unmatched or differing")
    if chained:
        print(f"chain outputs compared: {chained}, worst chain score difference {chain_worst:.5f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
