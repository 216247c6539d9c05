"""The consumer pod: open-loop load on the provider's Service by name; its records over HTTP.

``GET /records?since=N`` answers ``{"next": M, "records": [...]}`` (JSON lines of
:class:`stats.Record`). Settings from the environment: TARGET_URL, RATE, TIMEOUT, PORT.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .loadgen import OpenLoop, requests_sender  # the pod runs it as bench_rollout.consumer

LOAD = OpenLoop(
    requests_sender(os.environ.get("TARGET_URL", "http://provider/"), float(os.environ.get("TIMEOUT", "5"))),
    rate=float(os.environ.get("RATE", "20")),
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        since = int(query.get("since", ["0"])[0])
        records = LOAD.snapshot(since)
        body = json.dumps({"next": since + len(records), "records": [r.to_json() for r in records]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    LOAD.start()
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
