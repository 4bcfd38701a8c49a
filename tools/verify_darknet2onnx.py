#!/usr/bin/env python3
"""Check tools/darknet2onnx.py against OpenCV's own Darknet importer.

Not needed at run time; a developer's check. Needs, besides the venv's
numpy/onnxruntime/Pillow, ``opencv-python-headless`` < 5 (OpenCV 5 dropped
``readNetFromDarknet``), e.g. in a scratch venv:

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install numpy onnxruntime==1.31.1 \
        pillow 'opencv-python-headless<5'
    /tmp/cv/bin/python tools/verify_darknet2onnx.py CFG WEIGHTS MODEL.onnx IMAGE...

For each image (resized to the network size, no letterbox, RGB, /255) it runs
the same blob through cv2.dnn and through the ONNX model, converts OpenCV's
yolo outputs (boxes normalised 0..1, class scores = objectness * class,
zeroed under the layer's threshold, rows cell-major) to the ONNX layout and
prints the largest differences. It also checks that batches of 1, 2 and 8
give the same per-image output. Exits non-zero if a difference is above
--tol.
"""

from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--tol", type=float, default=1e-3, help="max abs difference allowed on 0..1 values")
    args = p.parse_args()

    meta = {pr.key: pr.value for pr in onnx.load(args.model, load_external_data=False).metadata_props}
    heads = json.loads(meta["heads"])
    h_in, w_in = json.loads(meta["input_size"])

    net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out_names = net.getUnconnectedOutLayersNames()
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])

    worst = {"xy_px": 0.0, "wh_px": 0.0, "obj": 0.0, "cls_prob": 0.0}
    blobs = []
    ok = True
    for path in args.images:
        img = cv2.imread(path)
        if img is None:
            print(f"cannot read {path}", file=sys.stderr)
            return 2
        blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (w_in, h_in), swapRB=True, crop=False)
        blobs.append(blob)
        net.setInput(blob)
        cv_outs = net.forward(out_names)
        ours = sess.run(["output"], {"images": blob})[0][0]  # [rows, 85]
        offset = 0
        per_image = {k: 0.0 for k in worst}
        for head, cv_out in zip(heads, cv_outs):
            gh, gw = head["grid"]
            a = len(head["mask"])
            ch = ours.shape[1]
            # OpenCV rows: (y * gw + x) * A + anchor
            cv = cv_out.reshape(gh, gw, a, ch).transpose(2, 0, 1, 3).reshape(-1, ch)
            mine = ours[offset : offset + a * gh * gw]
            offset += a * gh * gw
            cv_xy = cv[:, 0:2] * np.array([w_in, h_in], np.float32)
            cv_wh = cv[:, 2:4] * np.array([w_in, h_in], np.float32)
            per_image["xy_px"] = max(per_image["xy_px"], float(np.abs(cv_xy - mine[:, 0:2]).max()))
            per_image["wh_px"] = max(per_image["wh_px"], float(np.abs(cv_wh - mine[:, 2:4]).max()))
            per_image["obj"] = max(per_image["obj"], float(np.abs(cv[:, 4] - mine[:, 4]).max()))
            prob = mine[:, 4:5] * mine[:, 5:]
            # OpenCV zeroes class probabilities at or under its threshold
            nz = cv[:, 5:] > 0
            diff = np.where(nz, np.abs(cv[:, 5:] - prob), 0.0)
            # where OpenCV zeroed, ours must be small too
            zeroed_max = float(np.where(nz, 0.0, prob).max())
            per_image["cls_prob"] = max(per_image["cls_prob"], float(diff.max()))
            if zeroed_max > 0.25:
                print(f"{path}: OpenCV zeroed a class prob that is {zeroed_max:.4f} here")
                ok = False
        print(f"{path}: max abs diff " + ", ".join(f"{k}={v:.3g}" for k, v in per_image.items()))
        for k, v in per_image.items():
            worst[k] = max(worst[k], v)
        # relative tolerance in pixels: 1 px = 1/416
        if per_image["obj"] > args.tol or per_image["cls_prob"] > args.tol:
            ok = False
        if per_image["xy_px"] > args.tol * w_in or per_image["wh_px"] > args.tol * w_in * 4:
            ok = False

    # dynamic batch: 1, 2 and 8 images give the same per-image rows
    base = np.concatenate([blobs[i % len(blobs)] for i in range(8)], axis=0)
    singles = [sess.run(["output"], {"images": base[i : i + 1]})[0][0] for i in range(8)]
    batch_diff = 0.0
    for n in (2, 8):
        for start in range(0, 8, n):
            out = sess.run(["output"], {"images": base[start : start + n]})[0]
            if out.shape[0] != n:
                print(f"batch {n}: got {out.shape[0]} outputs")
                ok = False
            for j in range(n):
                batch_diff = max(batch_diff, float(np.abs(out[j] - singles[start + j]).max()))
    print(f"batch 1 vs 2 vs 8: max abs diff {batch_diff:.3g}")
    print("worst: " + ", ".join(f"{k}={v:.3g}" for k, v in worst.items()))
    if batch_diff > 1e-4:
        ok = False
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
