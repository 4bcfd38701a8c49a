#!/usr/bin/env python3
"""Reads back a dataset written by `visionq dataset export`, with parsers that are
not visionq's, for its tests.

    <cache>/venv/bin/python tools/check_dataset.py coco DIR
    <cache>/venv/bin/python tools/check_dataset.py yolo DIR

Exits non-zero (with the reason on stderr) when the dataset does not hold
together; otherwise prints one JSON object on stdout:

    {"images": n, "boxes": m, "classes": [names...],
     "labels": {image file name: [[class name, x1, y1, x2, y2], ...]}}

with boxes in pixels, so a test can compare them with the results it got.

* coco: `pycocotools.coco.COCO` loads `annotations.json` (it indexes images,
  annotations and categories and fails on a broken file); every image's file is
  under `images/` with its size; every annotation has a 4-number `bbox` inside
  its image, `area` = w * h, `iscrowd` 0 and a known category.
* yolo: `data.yaml` read with PyYAML (`names` a list or an index map, `nc` equal
  to its length); every `images/X.*` has `labels/X.txt` and the other way round;
  every label line has 5 fields, a class id below `nc` and four numbers in [0, 1].
  The image size comes from the file itself (PIL), as a YOLO trainer reads it.
"""

import contextlib
import json
import sys
from pathlib import Path


def fail(msg: str) -> None:
    sys.exit(f"check_dataset: {msg}")


def check_coco(root: Path) -> dict:
    from pycocotools.coco import COCO

    # COCO() prints its progress on stdout, which carries this script's answer.
    with contextlib.redirect_stdout(sys.stderr):
        coco = COCO(str(root / "annotations.json"))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    labels = {}
    boxes = 0
    for img in coco.loadImgs(coco.getImgIds()):
        path = root / "images" / img["file_name"]
        if not path.is_file():
            fail(f"{path} is listed but missing")
        w, h = img["width"], img["height"]
        out = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            x, y, bw, bh = ann["bbox"]
            if not (0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6):
                fail(f"annotation {ann['id']}: bbox {ann['bbox']} outside its {w}x{h} image")
            if abs(ann["area"] - bw * bh) > 1e-3 * max(1.0, bw * bh):
                fail(f"annotation {ann['id']}: area {ann['area']} is not w*h {bw * bh}")
            if ann["iscrowd"] != 0:
                fail(f"annotation {ann['id']}: iscrowd {ann['iscrowd']}")
            if ann["category_id"] not in cats:
                fail(f"annotation {ann['id']}: unknown category {ann['category_id']}")
            out.append([cats[ann["category_id"]], x, y, x + bw, y + bh])
            boxes += 1
        labels[img["file_name"]] = out
    on_disk = sorted(p.name for p in (root / "images").iterdir())
    if on_disk != sorted(labels):
        fail(f"images/ holds {on_disk}, the annotations list {sorted(labels)}")
    return {"images": len(labels), "boxes": boxes, "classes": [cats[i] for i in sorted(cats)], "labels": labels}


def check_yolo(root: Path) -> dict:
    import yaml
    from PIL import Image

    data = yaml.safe_load((root / "data.yaml").read_text())
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            fail(f"names keys {sorted(names)} are not 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if data.get("nc", len(names)) != len(names):
        fail(f"nc {data['nc']} but {len(names)} names")
    for key in ("train", "val"):
        if not (root / data[key]).is_dir():
            fail(f"{key}: {data[key]} is not a folder under {root}")
    images = {p.stem: p for p in (root / "images").iterdir()}
    label_files = {p.stem: p for p in (root / "labels").iterdir()}
    if sorted(images) != sorted(label_files):
        fail(f"images without labels or labels without images: {sorted(set(images) ^ set(label_files))}")
    labels = {}
    boxes = 0
    for stem, image in sorted(images.items()):
        with Image.open(image) as im:
            w, h = im.size
        out = []
        for n, line in enumerate(label_files[stem].read_text().splitlines(), 1):
            fields = line.split()
            if len(fields) != 5:
                fail(f"{label_files[stem]}:{n}: {len(fields)} fields, not 5")
            cls = int(fields[0])
            if not 0 <= cls < len(names):
                fail(f"{label_files[stem]}:{n}: class {cls} not below {len(names)}")
            cx, cy, bw, bh = (float(v) for v in fields[1:])
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, bw, bh)):
                fail(f"{label_files[stem]}:{n}: values outside [0, 1]: {fields[1:]}")
            out.append([names[cls], (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            boxes += 1
        labels[image.name] = out
    return {"images": len(images), "boxes": boxes, "classes": names, "labels": labels}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("coco", "yolo"):
        fail("usage: check_dataset.py coco|yolo DIR")
    root = Path(sys.argv[2])
    result = check_coco(root) if sys.argv[1] == "coco" else check_yolo(root)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
