"""A loopback HTTP server that demands Basic or Digest auth, and keeps every request's headers.

``/basic`` wants ``Authorization: Basic`` for ``USER``/``PASSWORD``; ``/digest``
wants RFC 7616 Digest (MD5, ``qop=auth``) and checks it for real: the response
hash, a nonce it issued, and a nonce count that grows on every use of a nonce
(a replayed or stale count is answered 401, as a strict server does). Either
path answers 200 with body ``ok`` once authorised.

Why a real server: what clients do with auth (a 401 round trip, the nonce
bookkeeping, the ``Authorization`` header they add on their own) is exactly
what an outbound patch can break.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

USER = "alice"
PASSWORD = "wonderland"
REALM = "pilotfish-test"

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AuthServer

    def do_GET(self) -> None:
        self.server.record(self.path, [(k.lower(), v) for k, v in self.headers.items()])
        given = self.headers.get("Authorization", "")
        if self.path.startswith("/basic"):
            expected = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
            ok, challenge = given == expected, 'Basic realm="%s"' % REALM
        elif self.path.startswith("/digest"):
            ok, challenge = self.server.check_digest(self.command, given), self.server.digest_challenge()
        else:
            ok, challenge = True, ""
        if ok:
            self._reply(200, b"ok")
        else:
            self._reply(401, b"unauthorised", ("WWW-Authenticate", challenge))

    def _reply(self, code: int, body: bytes, *headers: Tuple[str, str]) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class AuthServer(ThreadingHTTPServer):
    """``with AuthServer() as srv:`` then ``srv.url``; ``srv.take()`` returns ``(path, headers)`` seen."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        self.seen: List[Tuple[str, List[Tuple[str, str]]]] = []
        self.nonce_counts: Dict[str, int] = {}
        self.rejected_replays = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> AuthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def record(self, path: str, headers: List[Tuple[str, str]]) -> None:
        with self._lock:
            self.seen.append((path, headers))

    def take(self) -> List[Tuple[str, List[Tuple[str, str]]]]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen

    def digest_challenge(self) -> str:
        nonce = secrets.token_hex(16)
        with self._lock:
            self.nonce_counts[nonce] = 0
        return 'Digest realm="%s", qop="auth", algorithm=MD5, nonce="%s", opaque="op"' % (REALM, nonce)

    def check_digest(self, method: str, header: str) -> bool:
        if not header.startswith("Digest "):
            return False
        params = {
            m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(header)
        }
        try:
            nonce, count = params["nonce"], int(params["nc"], 16)
            ha1 = _md5("%s:%s:%s" % (params["username"], REALM, PASSWORD))
            ha2 = _md5("%s:%s" % (method, params["uri"]))
            expected = _md5(":".join((ha1, nonce, params["nc"], params["cnonce"], params["qop"], ha2)))
        except (KeyError, ValueError):
            return False
        with self._lock:
            last = self.nonce_counts.get(nonce)
            if last is None or params["username"] != USER or params["response"] != expected:
                return False
            if count <= last:
                self.rejected_replays += 1
                return False
            self.nonce_counts[nonce] = count
        return True
