#!/usr/bin/env python3
"""Convert a Darknet YOLO model (cfg + weights + names) to ONNX.

Usage:
    darknet2onnx.py CFG WEIGHTS NAMES OUT.onnx [--bn fold|node] [--model-version V]

Written for YOLOv3-tiny (the project's default model) but it handles the
layer types such networks are made of:

* ``[convolutional]`` with or without ``batch_normalize`` (the batch norm is
  folded into the convolution by default, or emitted as a
  ``BatchNormalization`` node with ``--bn node``), activations ``leaky``,
  ``linear``, ``relu``, ``logistic`` and ``mish``/``swish``; ``groups``.
* ``[maxpool]``, including Darknet's ``size=2 stride=1`` pool that keeps the
  spatial size by padding on the right/bottom only.
* ``[route]`` (one layer, or several concatenated on channels), ``[shortcut]``
  (plain add), ``[upsample]`` (nearest neighbour).
* ``[yolo]`` heads, decoded inside the graph.

The graph
---------
Input ``images``: float32 ``[batch, 3, H, W]`` (H, W from the cfg, 416 for
YOLOv3-tiny), RGB, values 0..1 (pixel / 255, nothing else; this is Darknet's
own convention). ``batch`` is a symbolic, dynamic dimension.

Output ``output``: float32 ``[batch, boxes, 5 + classes]``, the YOLOv5-style
layout. Each row is ``cx, cy, w, h`` in input pixels, then the objectness
(sigmoid) and one sigmoid score per class (not multiplied by objectness).

Row order: the ``[yolo]`` heads in cfg order (for YOLOv3-tiny: the 13x13
head, masks 3,4,5, then the 26x26 head, masks 0,1,2); inside one head the
anchors of its mask in mask order, then grid row ``y``, then grid column
``x``.  So row ``offset(head) + (a * gh + y) * gw + x``.  For YOLOv3-tiny at
416x416 that is 3*13*13 + 3*26*26 = 2535 rows.

The decoding follows Darknet's ``get_yolo_box``:
``cx = (x + sigmoid(tx)) * stride_x``, ``cy = (y + sigmoid(ty)) * stride_y``,
``w = exp(tw) * anchor_w``, ``h = exp(th) * anchor_h`` (anchors are in input
pixels), with ``stride = input size / grid size``; ``scale_x_y`` is honoured.

Metadata properties: ``names`` (JSON list of class names), ``layout``
(``yolov5``), ``model_name``, ``model_version``, ``source``, ``input_size``.

The weights file starts with ``major, minor, revision`` (int32 each) and a
``seen`` counter that is int64 when ``major*10 + minor >= 2`` and int32
otherwise, then float32 parameters layer by layer: for a convolution with
batch norm ``biases(beta), scales(gamma), rolling_mean, rolling_var, weights``,
without batch norm ``biases, weights``.  The converter checks that every
parameter in the file is used exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DARKNET_BN_EPS = 1e-6  # darknet: (x - mean) / (sqrt(var) + .000001f)
DEFAULT_OPSET = 13
DEFAULT_IR_VERSION = 8


class ConversionError(Exception):
    """The cfg or weights cannot be converted."""


# --------------------------------------------------------------------------
# cfg parsing
# --------------------------------------------------------------------------


@dataclass
class Section:
    kind: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise ConversionError(f"[{self.kind}] at line {self.line}: missing '{key}'")
            return default
        return int(self.options[key])

    def get_float(self, key: str, default: float) -> float:
        return float(self.options.get(key, default))

    def get_str(self, key: str, default: str) -> str:
        return self.options.get(key, default).strip()

    def get_ints(self, key: str) -> list[int]:
        raw = self.options.get(key, "")
        return [int(v) for v in raw.replace(" ", "").split(",") if v != ""]


def parse_cfg(text: str) -> list[Section]:
    """Parse a Darknet cfg into sections, in file order."""
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConversionError(f"line {lineno}: bad section header {raw!r}")
            sections.append(Section(kind=line[1:-1].strip(), line=lineno))
            continue
        if "=" not in line:
            raise ConversionError(f"line {lineno}: expected key=value, got {raw!r}")
        if not sections:
            raise ConversionError(f"line {lineno}: option outside of a section")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].kind not in ("net", "network"):
        raise ConversionError("the cfg must start with a [net] section")
    return sections


# --------------------------------------------------------------------------
# weights reading
# --------------------------------------------------------------------------


class WeightReader:
    def __init__(self, data: bytes):
        if len(data) < 16:
            raise ConversionError("weights file too short for its header")
        major, minor, revision = np.frombuffer(data, dtype="<i4", count=3)
        self.version = (int(major), int(minor), int(revision))
        if major * 10 + minor >= 2:
            seen = int(np.frombuffer(data, dtype="<i8", count=1, offset=12)[0])
            header = 20
        else:
            seen = int(np.frombuffer(data, dtype="<i4", count=1, offset=12)[0])
            header = 16
        self.seen = seen
        body = len(data) - header
        if body % 4:
            raise ConversionError("weights body is not a whole number of float32 values")
        self.values = np.frombuffer(data, dtype="<f4", offset=header).astype(np.float32)
        self.pos = 0

    def take(self, count: int, what: str) -> np.ndarray:
        if self.pos + count > self.values.size:
            raise ConversionError(
                f"weights file ends early while reading {what}: need {count} floats at "
                f"{self.pos}, file has {self.values.size}"
            )
        out = self.values[self.pos : self.pos + count]
        self.pos += count
        return out

    def remaining(self) -> int:
        return self.values.size - self.pos


# --------------------------------------------------------------------------
# graph building
# --------------------------------------------------------------------------


@dataclass
class Tensor:
    name: str
    channels: int
    height: int
    width: int


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = 0

    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}_{self._counter}"

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        outputs = [self.fresh(base) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "_" + op, **attrs))
        return outputs

    def node1(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        return self.node(op, inputs, base, **attrs)[0]


def _activation(g: GraphBuilder, x: str, kind: str, base: str) -> str:
    if kind == "linear":
        return x
    if kind == "leaky":
        return g.node1("LeakyRelu", [x], base + "_leaky", alpha=0.1)
    if kind == "relu":
        return g.node1("Relu", [x], base + "_relu")
    if kind == "logistic":
        return g.node1("Sigmoid", [x], base + "_sigmoid")
    if kind == "swish":
        s = g.node1("Sigmoid", [x], base + "_sig")
        return g.node1("Mul", [x, s], base + "_swish")
    if kind == "mish":
        sp = g.node1("Softplus", [x], base + "_softplus")
        th = g.node1("Tanh", [sp], base + "_tanh")
        return g.node1("Mul", [x, th], base + "_mish")
    raise ConversionError(f"unsupported activation '{kind}'")


def _conv(g, sec, idx, x: Tensor, weights: WeightReader, bn_mode: str) -> Tensor:
    filters = sec.get_int("filters")
    size = sec.get_int("size", 1)
    stride = sec.get_int("stride", 1)
    pad_flag = sec.get_int("pad", 0)
    padding = size // 2 if pad_flag else sec.get_int("padding", 0)
    groups = sec.get_int("groups", 1)
    bn = sec.get_int("batch_normalize", 0)
    act = sec.get_str("activation", "logistic")
    if x.channels % groups:
        raise ConversionError(f"layer {idx}: {x.channels} channels not divisible by groups={groups}")
    cin = x.channels // groups
    base = f"l{idx}_conv"

    bias = weights.take(filters, f"layer {idx} biases").copy()
    if bn:
        gamma = weights.take(filters, f"layer {idx} bn scales").copy()
        mean = weights.take(filters, f"layer {idx} bn mean").copy()
        var = weights.take(filters, f"layer {idx} bn variance").copy()
    w = weights.take(filters * cin * size * size, f"layer {idx} conv weights")
    w = w.reshape(filters, cin, size, size).copy()

    attrs = dict(
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[padding, padding, padding, padding],
        group=groups,
    )
    if bn and bn_mode == "fold":
        # Darknet: y = gamma * (conv - mean) / (sqrt(var) + eps) + beta
        scale = (gamma.astype(np.float64) / (np.sqrt(var.astype(np.float64)) + DARKNET_BN_EPS))
        wf = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
        bf = (bias.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
        y = g.node1("Conv", [x.name, g.const(base + "_W", wf), g.const(base + "_B", bf)], base, **attrs)
    elif bn:
        y = g.node1("Conv", [x.name, g.const(base + "_W", w)], base, **attrs)
        # ONNX BN uses sqrt(var + eps); choose eps' so it equals darknet's sqrt(var) + eps
        # per channel by adjusting the variance instead: (sqrt(var)+eps)^2.
        var_adj = ((np.sqrt(var.astype(np.float64)) + DARKNET_BN_EPS) ** 2).astype(np.float32)
        y = g.node1(
            "BatchNormalization",
            [
                y,
                g.const(base + "_bn_scale", gamma),
                g.const(base + "_bn_bias", bias),
                g.const(base + "_bn_mean", mean),
                g.const(base + "_bn_var", var_adj),
            ],
            base + "_bn",
            epsilon=0.0,
        )
    else:
        y = g.node1("Conv", [x.name, g.const(base + "_W", w), g.const(base + "_B", bias)], base, **attrs)
    y = _activation(g, y, act, base)
    oh = (x.height + 2 * padding - size) // stride + 1
    ow = (x.width + 2 * padding - size) // stride + 1
    return Tensor(y, filters, oh, ow)


def _maxpool(g, sec, idx, x: Tensor) -> Tensor:
    size = sec.get_int("size", sec.get_int("stride", 1))
    stride = sec.get_int("stride", 1)
    padding = sec.get_int("padding", size - 1)
    # darknet: out = (in + padding - size) / stride + 1, window starts at -padding/2
    begin = padding // 2
    end = padding - begin
    oh = (x.height + padding - size) // stride + 1
    ow = (x.width + padding - size) // stride + 1
    y = g.node1(
        "MaxPool",
        [x.name],
        f"l{idx}_maxpool",
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[begin, begin, end, end],
    )
    # ONNX: floor((in + begin + end - size) / stride) + 1 == darknet's formula
    return Tensor(y, x.channels, oh, ow)


def _upsample(g, sec, idx, x: Tensor) -> Tensor:
    stride = sec.get_int("stride", 2)
    if sec.get_float("scale", 1.0) != 1.0:
        raise ConversionError(f"layer {idx}: upsample scale != 1 is not supported")
    scales = g.const(f"l{idx}_scales", np.array([1, 1, stride, stride], dtype=np.float32))
    y = g.node1(
        "Resize",
        [x.name, "", scales],
        f"l{idx}_upsample",
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    return Tensor(y, x.channels, x.height * stride, x.width * stride)


def _abs_index(ref: int, idx: int) -> int:
    j = ref + idx if ref < 0 else ref
    if not 0 <= j < idx:
        raise ConversionError(f"layer {idx}: reference {ref} out of range")
    return j


def _route(g, sec, idx, layers: list[Tensor]) -> Tensor:
    refs = [_abs_index(r, idx) for r in sec.get_ints("layers")]
    if not refs:
        raise ConversionError(f"layer {idx}: route without layers")
    if sec.get_int("groups", 1) != 1:
        raise ConversionError(f"layer {idx}: route groups are not supported")
    srcs = [layers[r] for r in refs]
    if len(srcs) == 1:
        return srcs[0]
    h, w = srcs[0].height, srcs[0].width
    for s in srcs:
        if (s.height, s.width) != (h, w):
            raise ConversionError(f"layer {idx}: route inputs differ in spatial size")
    y = g.node1("Concat", [s.name for s in srcs], f"l{idx}_route", axis=1)
    return Tensor(y, sum(s.channels for s in srcs), h, w)


def _shortcut(g, sec, idx, x: Tensor, layers: list[Tensor]) -> Tensor:
    other = layers[_abs_index(sec.get_int("from"), idx)]
    if (other.channels, other.height, other.width) != (x.channels, x.height, x.width):
        raise ConversionError(f"layer {idx}: shortcut between different shapes is not supported")
    y = g.node1("Add", [x.name, other.name], f"l{idx}_shortcut")
    y = _activation(g, y, sec.get_str("activation", "linear"), f"l{idx}_shortcut")
    return Tensor(y, x.channels, x.height, x.width)


def _yolo_head(g, sec, idx, x: Tensor, net_w: int, net_h: int) -> tuple[str, int, dict]:
    """Decode one yolo head into [N, A*H*W, 5+C]."""
    classes = sec.get_int("classes")
    anchors_flat = [float(v) for v in sec.options.get("anchors", "").replace(" ", "").split(",") if v]
    if len(anchors_flat) % 2:
        raise ConversionError(f"layer {idx}: odd number of anchor values")
    anchors = np.array(anchors_flat, dtype=np.float32).reshape(-1, 2)
    mask = sec.get_ints("mask") or list(range(len(anchors)))
    sel = anchors[mask]  # [A, 2]
    a = len(mask)
    ch = 5 + classes
    if x.channels != a * ch:
        raise ConversionError(
            f"layer {idx}: yolo input has {x.channels} channels, expected {a}*(5+{classes})"
        )
    gh, gw = x.height, x.width
    stride_x = net_w / gw
    stride_y = net_h / gh
    sxy = sec.get_float("scale_x_y", 1.0)
    base = f"l{idx}_yolo"

    r = g.node1("Reshape", [x.name, g.const(base + "_s1", np.array([-1, a, ch, gh, gw], np.int64))], base + "_r")
    t = g.node1("Transpose", [r], base + "_t", perm=[0, 1, 3, 4, 2])  # [N, A, H, W, ch]

    def slice_last(start: int, end: int, tag: str) -> str:
        return g.node1(
            "Slice",
            [
                t,
                g.const(base + f"_{tag}_st", np.array([start], np.int64)),
                g.const(base + f"_{tag}_en", np.array([end], np.int64)),
                g.const(base + f"_{tag}_ax", np.array([4], np.int64)),
            ],
            base + "_" + tag,
        )

    txy = slice_last(0, 2, "xy")
    twh = slice_last(2, 4, "wh")
    tconf = slice_last(4, ch, "conf")

    xy = g.node1("Sigmoid", [txy], base + "_xy_sig")
    if sxy != 1.0:
        xy = g.node1("Mul", [xy, g.const(base + "_sxy", np.array(sxy, np.float32))], base + "_xy_sc")
        xy = g.node1(
            "Sub", [xy, g.const(base + "_sxy_off", np.array((sxy - 1.0) / 2.0, np.float32))], base + "_xy_off"
        )
    ys, xs = np.meshgrid(np.arange(gh, dtype=np.float32), np.arange(gw, dtype=np.float32), indexing="ij")
    grid = np.stack([xs, ys], axis=-1).reshape(1, 1, gh, gw, 2)
    xy = g.node1("Add", [xy, g.const(base + "_grid", grid)], base + "_xy_grid")
    xy = g.node1(
        "Mul", [xy, g.const(base + "_stride", np.array([stride_x, stride_y], np.float32))], base + "_xy_px"
    )
    wh = g.node1("Exp", [twh], base + "_wh_exp")
    wh = g.node1("Mul", [wh, g.const(base + "_anchors", sel.reshape(1, a, 1, 1, 2))], base + "_wh_px")
    conf = g.node1("Sigmoid", [tconf], base + "_conf_sig")
    cat = g.node1("Concat", [xy, wh, conf], base + "_cat", axis=4)
    out = g.node1(
        "Reshape", [cat, g.const(base + "_s2", np.array([-1, a * gh * gw, ch], np.int64))], base + "_out"
    )
    info = {
        "layer": idx,
        "grid": [gh, gw],
        "stride": [stride_y, stride_x],
        "anchors": sel.tolist(),
        "mask": mask,
        "rows": a * gh * gw,
    }
    return out, classes, info


def convert(
    cfg_text: str,
    weights_data: bytes,
    names: list[str],
    *,
    bn_mode: str = "fold",
    model_name: str = "yolov3-tiny",
    model_version: str = "darknet",
    source: str = "",
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Build the ONNX model. Raises ConversionError on unsupported input."""
    if bn_mode not in ("fold", "node"):
        raise ConversionError(f"bn_mode must be 'fold' or 'node', not {bn_mode!r}")
    sections = parse_cfg(cfg_text)
    net = sections[0]
    net_w = net.get_int("width")
    net_h = net.get_int("height")
    channels = net.get_int("channels", 3)
    weights = WeightReader(weights_data)

    g = GraphBuilder()
    x = Tensor("images", channels, net_h, net_w)
    layers: list[Tensor] = []
    heads: list[str] = []
    head_info: list[dict] = []
    classes_seen: set[int] = set()

    for idx, sec in enumerate(sections[1:]):
        kind = sec.kind
        if kind in ("convolutional", "conv"):
            x = _conv(g, sec, idx, x, weights, bn_mode)
        elif kind in ("maxpool", "max"):
            x = _maxpool(g, sec, idx, x)
        elif kind == "upsample":
            x = _upsample(g, sec, idx, x)
        elif kind == "route":
            x = _route(g, sec, idx, layers)
        elif kind == "shortcut":
            x = _shortcut(g, sec, idx, x, layers)
        elif kind == "yolo":
            out, classes, info = _yolo_head(g, sec, idx, x, net_w, net_h)
            heads.append(out)
            head_info.append(info)
            classes_seen.add(classes)
            # a yolo layer passes its input through for the following layers
        else:
            raise ConversionError(f"layer {idx}: unsupported section [{kind}] (cfg line {sec.line})")
        layers.append(x)

    if weights.remaining():
        raise ConversionError(
            f"{weights.remaining()} float32 values left unread in the weights file: cfg and weights do not match"
        )
    if not heads:
        raise ConversionError("the cfg has no [yolo] layer")
    if len(classes_seen) != 1:
        raise ConversionError(f"yolo heads disagree on the class count: {sorted(classes_seen)}")
    num_classes = classes_seen.pop()
    if len(names) != num_classes:
        raise ConversionError(f"{len(names)} class names for {num_classes} classes")

    rows = sum(h["rows"] for h in head_info)
    if len(heads) == 1:
        g.nodes.append(helper.make_node("Identity", [heads[0]], ["output"], name="output_Identity"))
    else:
        g.nodes.append(helper.make_node("Concat", heads, ["output"], name="output_Concat", axis=1))

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", channels, net_h, net_w])
    outp = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", rows, 5 + num_classes])
    doc = (
        f"{model_name} converted from Darknet. Input: RGB, NCHW, float 0..1 (pixel/255). "
        f"Output [batch, {rows}, {5 + num_classes}]: cx, cy, w, h (input pixels), objectness, "
        f"{num_classes} class scores (sigmoid). Rows: yolo heads in cfg order "
        + ", ".join(f"{h['grid'][0]}x{h['grid'][1]} (mask {h['mask']})" for h in head_info)
        + "; within a head anchor-major, then grid y, then grid x."
    )
    graph = helper.make_graph(g.nodes, model_name, [inp], [outp], initializer=g.initializers, doc_string=doc)
    model = helper.make_model(
        graph,
        producer_name="visionq-darknet2onnx",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string=doc,
    )
    model.ir_version = DEFAULT_IR_VERSION
    model.model_version = 1
    props = {
        "names": json.dumps(names),
        "layout": "yolov5",
        "model_name": model_name,
        "model_version": model_version,
        "source": source or "converted from Darknet cfg/weights by visionq tools/darknet2onnx.py",
        "input_size": json.dumps([net_h, net_w]),
        "darknet_weights_version": ".".join(str(v) for v in weights.version),
        "heads": json.dumps(head_info),
    }
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def read_names(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def convert_files(cfg: str, weights: str, names: str, out: str, **kwargs) -> onnx.ModelProto:
    with open(cfg, encoding="utf-8") as f:
        cfg_text = f.read()
    with open(weights, "rb") as f:
        weights_data = f.read()
    with open(names, encoding="utf-8") as f:
        class_names = read_names(f.read())
    model = convert(cfg_text, weights_data, class_names, **kwargs)
    tmp = out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, out)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a Darknet YOLO cfg/weights to ONNX (YOLOv5-style output).")
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("names")
    p.add_argument("out")
    p.add_argument("--bn", choices=["fold", "node"], default="fold",
                   help="fold batch norm into the convolutions (default) or keep BatchNormalization nodes")
    p.add_argument("--model-name", default="yolov3-tiny")
    p.add_argument("--model-version", default="darknet")
    p.add_argument("--source", default="")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = p.parse_args(argv)
    try:
        model = convert_files(
            args.cfg,
            args.weights,
            args.names,
            args.out,
            bn_mode=args.bn,
            model_name=args.model_name,
            model_version=args.model_version,
            source=args.source,
            opset=args.opset,
        )
    except (ConversionError, OSError, ValueError) as e:
        print(f"darknet2onnx: error: {e}", file=sys.stderr)
        return 1
    out = model.graph.output[0].type.tensor_type.shape
    dims = [d.dim_param or d.dim_value for d in out.dim]
    print(f"wrote {args.out}: output {dims}, {len(model.graph.node)} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
