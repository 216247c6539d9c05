"""One HTTP(S) request at a time to the config service, and what every caller of it shares.

- ``https`` URLs are verified against ``PILOTFISH_CONFIG_CA``; the bearer token is re-read from
  ``PILOTFISH_TOKEN_FILE`` on every call because kubelet rotates projected tokens.
- Failures are :class:`CallFailed`; long-polls back off with :func:`backoff` (exponential,
  with jitter, so a fleet restarting together does not hammer a recovering service).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import threading
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .. import log, settings

NETWORK_SLACK = 10.0  # extra socket timeout on top of a long-poll's hold time
CALL_TIMEOUT = 5.0  # register / deregister, and connecting
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
MIN_POLL_SPACING = 1.0  # never poll faster than this when nothing changed (a misbehaving server)
MAX_BODY = 4 * 1024 * 1024


# OpenSSL keeps process-wide locks that loading a CA file or a TLS handshake may
# hold while the GIL is released. If the app forks at that moment (gunicorn
# spawning a worker while the owner's poller connects), the child inherits the
# lock held by a thread that does not exist there, and its first SSLContext
# (``import requests`` does one) hangs forever: seen on every start under
# Python 3.8, once in a few runs on 3.13. So our TLS set-up runs under this lock and
# a fork waits for it, briefly: a handshake stuck on a silent server must not
# hold up the app's fork, so after FORK_WAIT seconds the fork goes ahead.
FORK_WAIT = 2.0
tls_lock = threading.Lock()
"""Held during CA loading and the TLS handshake; a fork waits for it (at most :data:`FORK_WAIT`)."""
_tls_held_for_fork = False


def _tls_before_fork() -> None:
    global _tls_held_for_fork
    _tls_held_for_fork = tls_lock.acquire(timeout=FORK_WAIT)


def _tls_after_fork_in_parent() -> None:
    global _tls_held_for_fork
    if _tls_held_for_fork:
        _tls_held_for_fork = False
        tls_lock.release()


def _tls_after_fork_in_child() -> None:
    global tls_lock, _tls_held_for_fork
    tls_lock, _tls_held_for_fork = threading.Lock(), False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_tls_before_fork,
        after_in_parent=_tls_after_fork_in_parent,
        after_in_child=_tls_after_fork_in_child,
    )


class CallFailed(Exception):
    """A call to the config service did not give a usable answer; the message says why."""


class Transport:
    """One HTTP(S) request at a time to the config service.

    ``http.client`` directly, not ``urllib``: no proxy environment variables (the
    service is in-cluster), no redirects, and nothing the app may have
    configured globally (openers, default SSL contexts) changes our calls.
    """

    def __init__(self, base_url: str, ca_file: str = "", token_file: str = "") -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("PILOTFISH_CONFIG_URL=%r is not an http(s) URL" % base_url)
        self.base_url = base_url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.ca_file = ca_file
        self.token_file = token_file
        self._context: Optional[ssl.SSLContext] = None
        self._context_key: Optional[Tuple[str, float]] = None

    def _ssl_context(self) -> ssl.SSLContext:
        # Rebuilt when the CA file changes (cert rotation), cheap otherwise.
        mtime = os.stat(self.ca_file).st_mtime if self.ca_file else 0.0
        key = (self.ca_file, mtime)
        if self._context is None or self._context_key != key:
            self._context = ssl.create_default_context(cafile=self.ca_file or None)
            self._context_key = key
        return self._context

    def _token(self) -> str:
        if not self.token_file:
            return ""
        try:
            with open(self.token_file) as handle:
                return handle.read().strip()
        except OSError as problem:
            log.once(
                "config-token:%s" % self.token_file,
                "warning",
                "cannot read the service-account token %s (%s); calling the config service without it"
                % (self.token_file, problem.strerror or problem),
            )
            return ""

    def request(
        self,
        method: str,
        path: str,
        query: Optional[Dict[str, str]] = None,
        body: Optional[Dict[str, Any]] = None,
        timeout: float = CALL_TIMEOUT,
    ) -> Tuple[int, bytes]:
        target = self.prefix + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "User-Agent": "pilotfish-agent"}
        token = self._token()
        if token:
            headers["Authorization"] = "Bearer " + token
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            if self.https:
                with tls_lock:  # see FORK_WAIT: CA load and handshake, not the long-poll wait
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        self.host, self.port, timeout=min(timeout, CALL_TIMEOUT), context=self._ssl_context()
                    )
                    try:
                        conn.connect()  # a silent server holds the lock CALL_TIMEOUT at most
                        conn.sock.settimeout(timeout)  # then the long-poll may take its time
                    except BaseException:
                        conn.close()
                        raise
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                conn.request(method, target, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_BODY + 1)
            finally:
                conn.close()
        except ssl.SSLError as problem:
            raise CallFailed("TLS failed (%s); is PILOTFISH_CONFIG_CA the service's CA?" % problem)
        except (OSError, http.client.HTTPException) as problem:
            raise CallFailed("%s: %s" % (type(problem).__name__, problem))
        if len(data) > MAX_BODY:
            raise CallFailed("answer larger than %d bytes" % MAX_BODY)
        return response.status, data


def from_settings(current: settings.Settings) -> Optional[Transport]:
    """The transport to ``PILOTFISH_CONFIG_URL``; None (one warning if the URL is bad) without one."""
    if not current.config_url:
        return None
    try:
        return Transport(current.config_url, current.config_ca, current.token_file)
    except ValueError as problem:
        log.once("config-url", "warning", "%s; central config disabled" % problem)
        return None


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row (0: the first): jittered, capped."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(failures, 16)))
    return random.uniform(ceiling / 2, ceiling)


def decode(data: bytes) -> Any:
    """A JSON answer, or :class:`CallFailed`."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CallFailed("not JSON: %r" % data[:80])
