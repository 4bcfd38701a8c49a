#!/usr/bin/env python3
"""Sends photos to visionq over gRPC (`visionq.v1.Detector`) and prints each answer.

    pip install grpcio==1.85.3 protobuf        # and protoc: apt-get install protobuf-compiler
    export VISIONQ_TOKEN=vq_...
    python3 grpc_client.py detect 127.0.0.1:8080 line1-cam1 dog.jpg horses.jpg
    python3 grpc_client.py stream 127.0.0.1:8080 line1-cam1 dog.jpg horses.jpg
    python3 grpc_client.py health 127.0.0.1:8080
    python3 grpc_client.py detect --ca-file ca.pem visionq.example.com:443 line1-cam1 dog.jpg   # TLS

`detect` makes one unary call per photo (`--timeout S` is the call's deadline,
30 s by default); `stream` sends all the photos on one `DetectStream` call, each
named by its path, and prints every reply as it comes (`accepted`, then `result`
or `timeout`; `refused` for a frame the server did not take). `health` asks the
standard `grpc.health.v1` service about the server and about the detector.

One JSON line per answer. A call that fails prints its gRPC status, its message
and visionq's trailers (`visionq-code`, `retry-after`, `visionq-frame-id`).
Exits 1 when any photo got no result.

Nothing is generated into this folder: the messages are built at run time from
the service's own `.proto` (ingest/proto in the repository; `--proto DIR` to
point elsewhere), through the descriptor set protoc writes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

PROTO_DIR = Path(__file__).resolve().parents[2] / "ingest" / "proto"
PROTO_FILE = "visionq/v1/detector.proto"

# grpc.health.v1: HealthCheckRequest {string service = 1}; HealthCheckResponse
# {ServingStatus status = 1}, a proto3 enum read off the wire by hand.
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def messages(proto_dir: Path):
    """DetectRequest, DetectResult and StreamReply, from the .proto via protoc."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "detector.pb"
        subprocess.run(
            ["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}", PROTO_FILE],
            check=True,
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return get("visionq.v1.DetectRequest"), get("visionq.v1.DetectResult"), get("visionq.v1.StreamReply")


def as_json(message) -> dict:
    """A reply as JSON, its `json` field (the whole result) parsed."""
    d = json_format.MessageToDict(message, preserving_proto_field_name=True)
    for r in (d, d.get("result")):
        if isinstance(r, dict) and "json" in r:
            r["json"] = json.loads(r["json"])
    return d


def failure(e: grpc.RpcError) -> dict:
    trailers = {k: v for k, v in (e.trailing_metadata() or ()) if k.startswith("visionq-") or k == "retry-after"}
    return {"grpc_status": e.code().name, "message": e.details(), "trailers": trailers}


def metadata(token):
    return (("authorization", f"Bearer {token}"),) if token else ()


def health(channel, timeout: float) -> int:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda service: b"\x0a" + bytes([len(service)]) + service.encode() if service else b"",
        response_deserializer=lambda raw: HEALTH_STATUS.get(raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0, "UNKNOWN"),
    )
    out = {}
    for service in ("", "visionq.v1.Detector"):
        try:
            out[service] = check(service, timeout=timeout)
        except grpc.RpcError as e:
            out[service] = failure(e)
    print(json.dumps(out), flush=True)
    return 0 if all(v == "SERVING" for v in out.values()) else 1


def detect(channel, args, Request, Result) -> int:
    call = channel.unary_unary(
        "/visionq.v1.Detector/Detect", request_serializer=Request.SerializeToString, response_deserializer=Result.FromString
    )
    missing = 0
    for path in args.photos:
        req = Request(station=args.station, image=Path(path).read_bytes(), client_id=path)
        started = time.monotonic()
        try:
            result = call(req, timeout=args.timeout, metadata=metadata(args.token))
            line = {"file": path, "result": as_json(result)}
        except grpc.RpcError as e:
            line = {"file": path, "error": failure(e)}
            missing += 1
        line["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(line), flush=True)
    return 1 if missing else 0


def stream(channel, args, Request, Reply) -> int:
    call = channel.stream_stream(
        "/visionq.v1.Detector/DetectStream", request_serializer=Request.SerializeToString, response_deserializer=Reply.FromString
    )
    frames = (Request(station=args.station, image=Path(p).read_bytes(), client_id=p) for p in args.photos)
    answered = set()
    try:
        for reply in call(frames, timeout=args.timeout, metadata=metadata(args.token)):
            d = as_json(reply)
            if "result" in d:
                answered.add(d["client_id"])
            print(json.dumps(d), flush=True)
    except grpc.RpcError as e:
        print(json.dumps({"error": failure(e)}), flush=True)
        return 1
    return 0 if answered == set(args.photos) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["detect", "stream", "health"])
    p.add_argument("target", help="host:port of visionq's ingest")
    p.add_argument("station", nargs="?")
    p.add_argument("photos", nargs="*")
    p.add_argument("--timeout", type=float, default=30.0, help="the call's deadline, seconds")
    p.add_argument("--proto", type=Path, default=PROTO_DIR, help="the folder holding visionq/v1/detector.proto")
    p.add_argument("--tls", action="store_true", help="TLS, verified against the system's roots")
    p.add_argument("--ca-file", type=Path, help="TLS, verified against these CA certificates (PEM)")
    args = p.parse_intermixed_args()
    args.token = os.environ.get("VISIONQ_TOKEN")
    options = [("grpc.max_receive_message_length", 64 << 20)]
    if args.tls or args.ca_file:
        roots = args.ca_file.read_bytes() if args.ca_file else None
        channel = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    if args.mode == "health":
        return health(channel, args.timeout)
    if not args.station or not args.photos:
        p.error("detect and stream take a station and photos")
    Request, Result, Reply = messages(args.proto)
    return detect(channel, args, Request, Result) if args.mode == "detect" else stream(channel, args, Request, Reply)


if __name__ == "__main__":
    sys.exit(main())
