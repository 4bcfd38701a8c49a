#!/usr/bin/env python3
"""Sends photos to a visionq station over its WebSocket and prints each answer.

    pip install websocket-client==1.9.2
    VISIONQ_TOKEN=vq_... python3 stream_client.py \
        ws://127.0.0.1:8080/v1/stations/line1-cam1/ws dog.jpg horses.jpg

Prints one JSON line per frame, as it completes: its result, or why it was not
run (an error, a timeout). Keeps at most the server's window of frames in flight:
it reads answers before sending more, so no frame is refused `window_full`.
Exits 1 if any frame got no result. The protocol: docs/STREAMING.md.
"""

import json
import os
import sys
from datetime import datetime, timezone

import websocket  # websocket-client


def main() -> int:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    url, paths = sys.argv[1], sys.argv[2:]
    token = os.environ.get("VISIONQ_TOKEN")
    headers = [f"Authorization: Bearer {token}"] if token else []
    ws = websocket.create_connection(url, header=headers, timeout=60)
    hello = json.loads(ws.recv())
    window = hello["window"]
    in_flight, failed = 0, False
    while paths or in_flight:
        # Fill the window: each frame's details (its id), then the frame itself.
        while paths and in_flight < window:
            path = paths.pop(0)
            captured = datetime.now(timezone.utc).isoformat()
            ws.send(json.dumps({"id": path, "captured_at": captured}))
            with open(path, "rb") as f:
                ws.send_binary(f.read())
            in_flight += 1
        answer = json.loads(ws.recv())
        if answer["type"] == "accepted":
            continue  # in the pipeline: its result follows
        # A result, a timeout, an error or a skip each end one frame.
        in_flight -= 1
        failed |= answer["type"] != "result"
        print(json.dumps(answer), flush=True)
    ws.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
