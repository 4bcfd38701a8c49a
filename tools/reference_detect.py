#!/usr/bin/env python3
"""Independent reference detector for visionq's tests.

    <cache>/venv/bin/python tools/reference_detect.py MODEL.onnx IMAGE... [--conf 0.25] [--iou 0.45]

Prints one JSON array on stdout, one object per image, in argument order:

    {"image": path, "width": w, "height": h,
     "detections": [{"class_id", "class_name", "score", "box_px": [x1, y1, x2, y2]}]}

Detections are sorted by score, highest first. It shares no code with the
Rust pipeline but follows its conventions, so the two can be compared:

* decode with OpenCV (``cv2.imdecode``, libjpeg-turbo for JPEG; the EXIF
  orientation applied, as ``cv2.imread`` does, unless ``--ignore-orientation``),
  BGR turned to RGB (``--bgr`` keeps BGR, for a model trained on BGR);
* letterbox into the model's input W x H: ``scale = min(W/w, H/h)``, scaled
  size ``round(w*scale), round(h*scale)`` (half away from zero) clamped to
  ``[1, W]`` / ``[1, H]``, ``pad_x = (W - sw) // 2``, ``pad_y = (H - sh) // 2``
  (as Ultralytics' ``round(dw - 0.1)``), padding grey 114, resized with
  ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` (plain bilinear, no
  antialiasing: what Darknet, OpenCV ``dnn`` and Ultralytics feed YOLO models);
  ``--stretch`` resizes to W x H without bars instead;
* float32 = u8 / 255, NCHW, batch 1;
* decode by layout, read from the ONNX metadata ``layout`` or inferred from
  the output shape:
  - ``yolov5`` ``[N, boxes, 5+C]`` (cx, cy, w, h, objectness, classes): rows
    with objectness < conf are skipped, score = objectness * best class
    score, kept if score >= conf;
  - ``yolov8`` ``[N, 4+C, anchors]``: score = best class score, kept if >= conf;
  - ``yolov10`` ``[N, max_det, 6]`` (x1, y1, x2, y2, score, class), no NMS;
* class-aware NMS (suppress when IoU > iou, 0.45 by default), at most 300
  detections;
* boxes mapped back with ``(v - pad) / scale`` and clipped to the image.

Class names come from the metadata ``names`` (a JSON list, or the Python
dict literal Ultralytics writes).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
import cv2

PAD_VALUE = 114


def round_half_away(v: float) -> int:
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def parse_names(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, dict):
        out: list[str] = []
        for k in sorted(value, key=lambda k: int(k)):
            while len(out) < int(k):
                out.append(str(len(out)))
            out.append(str(value[k]))
        return out
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def read_rgb(path: str, ignore_orientation: bool, bgr: bool) -> np.ndarray:
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if img is None:
        raise SystemExit(f"OpenCV cannot decode {path}")
    return img if bgr else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def letterbox(img: np.ndarray, in_w: int, in_h: int, stretch: bool = False):
    """Returns the model input (u8 HWC), scale_x, scale_y, pad_x, pad_y."""
    h, w = img.shape[:2]
    if stretch:
        resized = cv2.resize(img, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
        return resized, in_w / w, in_h / h, 0, 0
    f32 = np.float32
    # float32 arithmetic, as in the pipeline, so that .5 cases round the same way
    scale = min(f32(in_w) / f32(w), f32(in_h) / f32(h))
    sw = min(max(round_half_away(float(f32(w) * scale)), 1), in_w)
    sh = min(max(round_half_away(float(f32(h) * scale)), 1), in_h)
    scale = float(scale)
    pad_x = (in_w - sw) // 2
    pad_y = (in_h - sh) // 2
    resized = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR) if (sw, sh) != (w, h) else img
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[pad_y : pad_y + sh, pad_x : pad_x + sw] = resized
    return canvas, scale, scale, pad_x, pad_y


def to_tensor(hwc: np.ndarray) -> np.ndarray:
    tensor = (hwc.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor)


def infer_layout(shape: list, meta_layout: str | None) -> str:
    if meta_layout:
        return meta_layout.strip().lower()
    if len(shape) != 3:
        raise SystemExit(f"cannot infer the layout of an output of rank {len(shape)}")
    _, a, b = shape
    if b == 6 and a == 300:
        return "yolov10"
    if isinstance(a, int) and isinstance(b, int) and a < b:
        return "yolov8"
    return "yolov5"


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> list[int]:
    """Greedy, class-aware: a box only suppresses boxes of its own class."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        if len(keep) >= max_det:
            break
        rest = order[pos + 1 :]
        rest = rest[(~suppressed[rest]) & (classes[rest] == classes[i])]
        if rest.size:
            over = iou_one_to_many(boxes[i], boxes[rest]) > iou
            suppressed[rest[over]] = True
    return keep


def decode(out: np.ndarray, layout: str, conf: float):
    """One image's raw output -> (xyxy boxes in input pixels, scores, class ids)."""
    if layout == "yolov5":
        obj = out[:, 4]
        rows = out[obj >= conf]
        cls_scores = rows[:, 5:]
        cls = cls_scores.argmax(axis=1)
        score = rows[:, 4] * cls_scores[np.arange(len(rows)), cls]
        sel = score >= conf
        rows, cls, score = rows[sel], cls[sel], score[sel]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    elif layout == "yolov8":
        t = out.T  # [anchors, 4+C]
        cls_scores = t[:, 4:]
        cls = cls_scores.argmax(axis=1)
        score = cls_scores[np.arange(len(t)), cls]
        sel = score >= conf
        t, cls, score = t[sel], cls[sel], score[sel]
        cx, cy, w, h = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    elif layout == "yolov10":
        sel = out[:, 4] >= conf
        rows = out[sel]
        return rows[:, 0:4].astype(np.float64), rows[:, 4].astype(np.float64), rows[:, 5].astype(np.int64)
    else:
        raise SystemExit(f"unsupported layout '{layout}'")
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float64)
    return boxes, score.astype(np.float64), cls.astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Reference YOLO detector (onnxruntime + OpenCV + numpy).")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--layout", default=None, help="override the layout (yolov5, yolov8, yolov10)")
    p.add_argument("--indent", type=int, default=None)
    p.add_argument("--ignore-orientation", action="store_true", help="decode without applying EXIF orientation")
    p.add_argument("--bgr", action="store_true", help="feed the model BGR instead of RGB")
    p.add_argument("--stretch", action="store_true", help="resize to the input without letterbox bars")
    p.add_argument("--dump-input", default=None, help="write each image's u8 HWC model input to DIR/NAME.rgb")
    args = p.parse_args(argv)

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    names = parse_names(meta.get("names"))
    inp = sess.get_inputs()[0]
    out_info = sess.get_outputs()[0]
    in_h, in_w = inp.shape[2], inp.shape[3]
    if not isinstance(in_h, int) or not isinstance(in_w, int):
        size = json.loads(meta.get("input_size", meta.get("imgsz", "[640, 640]")))
        in_h, in_w = (size, size) if isinstance(size, int) else size
    layout = args.layout or infer_layout(out_info.shape, meta.get("layout"))

    results = []
    for path in args.images:
        img = read_rgb(path, args.ignore_orientation, args.bgr)
        height, width = img.shape[:2]
        hwc, scale_x, scale_y, pad_x, pad_y = letterbox(img, in_w, in_h, args.stretch)
        if args.dump_input:
            hwc.tofile(os.path.join(args.dump_input, os.path.basename(path) + ".rgb"))
        out = sess.run([out_info.name], {inp.name: to_tensor(hwc)})[0][0]
        boxes, scores, classes = decode(out, layout, args.conf)
        if layout != "yolov10":
            keep = nms(boxes, scores, classes, args.iou, args.max_det)
        else:
            keep = list(np.argsort(-scores, kind="stable")[: args.max_det])
        dets = []
        for i in keep:
            x1, y1, x2, y2 = boxes[i]
            mapped = [
                min(max((x1 - pad_x) / scale_x, 0.0), float(width)),
                min(max((y1 - pad_y) / scale_y, 0.0), float(height)),
                min(max((x2 - pad_x) / scale_x, 0.0), float(width)),
                min(max((y2 - pad_y) / scale_y, 0.0), float(height)),
            ]
            cid = int(classes[i])
            dets.append(
                {
                    "class_id": cid,
                    "class_name": names[cid] if names and cid < len(names) else str(cid),
                    "score": round(float(scores[i]), 6),
                    "box_px": [round(v, 3) for v in mapped],
                }
            )
        results.append({"image": path, "width": width, "height": height, "detections": dets})
    json.dump(results, sys.stdout, indent=args.indent)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
