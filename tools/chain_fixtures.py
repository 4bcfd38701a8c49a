#!/usr/bin/env python3
"""Test fixtures for model chains (issue 22), made at test time from assets the
project already pins, never committed:

    <cache>/venv/bin/python tools/chain_fixtures.py plate IN.jpg OUT.jpg \
        --box X1 Y1 X2 Y2 --region RX1 RY1 RX2 RY2 --text TEXT [--upside-down]
    <cache>/venv/bin/python tools/chain_fixtures.py failing-model OUT.onnx

`plate` paints a white plate at `region` (0-1 of the box, as a chain's `region`)
of a box in original pixels, with TEXT in black DejaVu Sans centred on it: a sign
on an object the detector finds, which a detector -> OCR chain should read
exactly (`--upside-down`: the sign turned by 180 degrees, for an orientation
classifier to tell). The font comes from Debian's fonts-dejavu-core, installed with apt-get
when missing.

`failing-model` writes a tiny classifier that loads (float [N, 3, 32, 32] in,
[N, 5] out as declared) but fails at run time: its Reshape to [-1, 5] cannot
divide the 3072 values of an image. It stands for a second-stage model that
breaks on real input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def ensure_font() -> str:
    if os.path.exists(FONT):
        return FONT
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "fonts-dejavu-core"], check=True, env=env)
    if not os.path.exists(FONT):
        sys.exit(f"{FONT} still missing after installing fonts-dejavu-core")
    return FONT


def plate(args: argparse.Namespace) -> None:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.open(args.input).convert("RGB")
    x1, y1, x2, y2 = args.box
    rx1, ry1, rx2, ry2 = args.region
    bw, bh = x2 - x1, y2 - y1
    left, top = round(x1 + rx1 * bw), round(y1 + ry1 * bh)
    right, bottom = round(x1 + rx2 * bw), round(y1 + ry2 * bh)
    sign = Image.new("RGB", (right - left + 1, bottom - top + 1), (255, 255, 255))
    draw = ImageDraw.Draw(sign)
    w, h = sign.size
    # The largest size whose text fits half the plate's height and 70 % of its width.
    size = max(8, h // 2)
    font = ImageFont.truetype(ensure_font(), size)
    while size > 8:
        font = ImageFont.truetype(FONT, size)
        l, t, r, b = draw.textbbox((0, 0), args.text, font=font)
        if r - l <= 0.7 * w and b - t <= 0.5 * h:
            break
        size -= 1
    l, t, r, b = draw.textbbox((0, 0), args.text, font=font)
    draw.text((w / 2 - (l + r) / 2, h / 2 - (t + b) / 2), args.text, fill=(0, 0, 0), font=font)
    if args.upside_down:
        sign = sign.rotate(180)
    img.paste(sign, (left, top))
    img.save(args.output, quality=95)


def failing_model(args: argparse.Namespace) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([-1, 5], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "fails_at_run",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, args.output)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plate")
    pl.add_argument("input")
    pl.add_argument("output")
    pl.add_argument("--box", type=float, nargs=4, required=True)
    pl.add_argument("--region", type=float, nargs=4, required=True)
    pl.add_argument("--text", required=True)
    pl.add_argument("--upside-down", action="store_true", help="the sign turned by 180 degrees")
    fm = sub.add_parser("failing-model")
    fm.add_argument("output")
    args = p.parse_args()
    {"plate": plate, "failing-model": failing_model}[args.cmd](args)


if __name__ == "__main__":
    main()
