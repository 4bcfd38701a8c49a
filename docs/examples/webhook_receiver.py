#!/usr/bin/env python3
"""A webhook receiver for visionq's events (docs/EVENTS.md), standard library only.

It checks each POST's signature (HMAC-SHA256 of "<timestamp>.<body>" keyed by the
sink's secret), refuses a timestamp older than five minutes (a replayed request),
answers 200 once the event is handled, and skips an event id it has seen already
(visionq delivers at least once: a repeat always carries the same id).

    python3 docs/examples/webhook_receiver.py --port 9000 --secret plant-secret-42

with, in visionq's config file:

    [[sink]]
    name = "plant"
    kind = "webhook"
    url = "http://127.0.0.1:9000/hook"
    secret = "plant-secret-42"
"""

import argparse
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_AGE_S = 300


def signature_ok(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def handler(secret: bytes, seen: set):
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            timestamp = self.headers.get("visionq-timestamp", "")
            signature = self.headers.get("visionq-signature", "")
            event_id = self.headers.get("visionq-event-id", "")
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE_S:
                return self.answer(400, "stale or missing timestamp")
            if not signature_ok(secret, timestamp, body, signature):
                return self.answer(401, "bad signature")
            if event_id in seen:
                return self.answer(200, "already handled")
            event = json.loads(body)
            result = event["result"]
            decision = result.get("decision") or {}
            classes = sorted({d["class_name"] for d in result["detections"]})
            print(f"{event['station']} {event['frame_id']} {decision.get('outcome', '-')} {classes}", flush=True)
            seen.add(event_id)  # a real receiver keeps these ids in its database
            self.answer(200, "ok")

        def answer(self, status: int, text: str):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Hook


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--secret", required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.secret.encode(), set()))
    print(f"listening on http://127.0.0.1:{args.port}/hook", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
