"""A loopback HTTP server that keeps the exact bytes of every request it receives.

Why raw sockets and not http.server: the point of the tests that use it is to
compare requests byte for byte (with the agent, without it), so nothing may
normalise, reorder or re-case a header on the way in.
"""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class CaptureServer:
    """``with CaptureServer() as srv:`` then ``srv.url``; ``srv.requests`` holds raw request bytes."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.requests: List[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="capture-server", daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            with self._lock:
                self.requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(RESPONSE)
        except OSError:
            pass
        finally:
            conn.close()

    def take(self) -> List[bytes]:
        """The requests received so far, oldest first, and forget them."""
        with self._lock:
            taken, self.requests = self.requests, []
        return taken


def headers_of(raw: bytes) -> List[Tuple[str, str]]:
    """(lower-case name, value) of every header line of a raw request."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = []
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out.append((name.strip().lower(), value.strip()))
    return out


def header(raw: bytes, name: str) -> Optional[str]:
    """The first value of header ``name`` in a raw request, or None."""
    for key, value in headers_of(raw):
        if key == name:
            return value
    return None
