"""A stand-in kube-apiserver on loopback that replays API objects and watch streams.

No Kubernetes API server can run on this machine, so the in-cluster code is tested
against this: the real ``kubernetes`` Python client talks real HTTP to it, and it
answers with objects in the API server's wire format (the fixtures in
``tests/data/kube/``, written after the shapes kube-apiserver 1.30 returns and
trimmed to the fields that matter). What it checks is our client code — list,
watch, relist on 410, TokenReview, merge-patch of a Pod — not Kubernetes itself.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit


class FakeKube(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.lists: Dict[str, List[Dict[str, Any]]] = {}  # path -> successive lists (the last repeats)
        self.watches: Dict[str, List[List[Dict[str, Any]]]] = {}  # path -> successive streams
        self.token_reviews: Dict[str, Dict[str, Any]] = {}  # token -> status
        self.pods: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.requests: List[Tuple[str, str, Any]] = []  # (method, path?query, body)
        self.lock = threading.Lock()
        self.closing = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def calls(self, method: str, prefix: str) -> List[Tuple[str, str, Any]]:
        with self.lock:
            return [r for r in self.requests if r[0] == method and r[1].startswith(prefix)]

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        fake = self.server
        with fake.lock:
            fake.requests.append(("GET", self.path, None))
        if query.get("watch", ["false"])[0] in ("true", "1"):
            self._watch(parts.path)
            return
        with fake.lock:
            queue = fake.lists.get(parts.path) or []
            listing = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else None)
        if listing is None:
            self._send(404, {"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"})
            return
        self._send(200, listing)

    def _watch(self, path: str) -> None:
        fake = self.server
        with fake.lock:
            streams = fake.watches.get(path) or []
            events: Optional[List[Dict[str, Any]]] = streams.pop(0) if streams else None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events or []:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                time.sleep(0.05)  # events arrive apart, as from a cluster: the behaviour of the fake
            if events is None:  # nothing more recorded: hold the watch open a while, like a quiet cluster
                fake.closing.wait(2.0)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        body = self._body()
        fake = self.server
        with fake.lock:
            fake.requests.append(("POST", self.path, body))
        if self.path.startswith("/apis/authentication.k8s.io/v1/tokenreviews"):
            token = body["spec"]["token"]
            status = fake.token_reviews.get(token, {"authenticated": False, "error": "invalid bearer token"})
            self._send(
                201,
                {
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": None},
                    "spec": body["spec"],
                    "status": status,
                },
            )
            return
        self._send(404, {"kind": "Status", "code": 404})

    def do_PATCH(self) -> None:
        body = self._body()
        fake = self.server
        with fake.lock:
            fake.requests.append(("PATCH", self.path, body))
        bits = urlsplit(self.path).path.strip("/").split("/")
        # /api/v1/namespaces/{ns}/pods/{name}
        if len(bits) == 6 and bits[4] == "pods":
            key = (bits[3], bits[5])
            with fake.lock:
                pod = fake.pods.get(key)
                if pod is None:
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                annotations = pod["metadata"].setdefault("annotations", {})
                for name, value in (body.get("metadata", {}).get("annotations") or {}).items():
                    if value is None:
                        annotations.pop(name, None)
                    else:
                        annotations[name] = value
                pod["metadata"]["resourceVersion"] = str(int(pod["metadata"].get("resourceVersion", "1")) + 1)
                answer = json.loads(json.dumps(pod))
            self._send(200, answer)
            return
        self._send(404, {"kind": "Status", "code": 404})
