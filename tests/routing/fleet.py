"""Instances of a Service on loopback, a real config service that knows them, and a routed client.

- :class:`Instance`: a keep-alive HTTP/1.1 server on its own loopback address
  (127.0.0.2, 127.0.0.3 ...), optionally TLS, that records every request it
  gets (path, tag header, consumer marker, Host, the client's port) and can play
  an instance going offline (``X-Pilotfish-Offline: 1`` + ``Connection: close``).
- :func:`registry`: ``pilotfish-webhook serve --policies FILE`` (embedded mode)
  with the instances registered through its own ``/v1/register``.
- :func:`run_client`: ``apps/routed_client.py`` under the agent (``PYTHONPATH``
  = the agent tree's bootstrap only, as in a pod): it calls the Service by
  name with every client library and prints which instance answered each call.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from support.agent import agent_env
from support.config_server import ConfigServer, config_server
from support.servers import free_port

APPS = Path(__file__).resolve().parent / "apps"
NAMESPACE = "shop"


def free_port_on(*addresses: str) -> int:
    """A port free on every one of ``addresses`` (instances share the Service's port number)."""
    for _ in range(50):
        port = free_port()
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port on %s" % (addresses,))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        owner = self.server.owner
        record = {
            "path": self.path,
            "tag": self.headers.get("x-pilotfish-tag"),
            "consumer": self.headers.get("x-pilotfish-consumer"),
            "host": self.headers.get("host"),
            "peer": self.client_address[1],
        }
        with owner.lock:
            owner.requests.append(record)
        body = json.dumps({"pod": owner.pod, "tag": record["tag"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if owner.offline:
            self.send_header("X-Pilotfish-Offline", "1")
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Instance


class Instance:
    """One instance of a Service: ``with Instance("stock-gray", "127.0.0.3", port, tag="gray")``."""

    def __init__(
        self, pod: str, ip: str, port: int, tag: str = "", tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.pod, self.ip, self.port, self.tag = pod, ip, port, tag
        self.requests: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.offline = False
        self.server = _Server((ip, port), _Handler)
        self.server.owner = self
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Instance:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def take(self) -> List[Dict[str, Any]]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken


def policies(tmp: Path, service: str, service_port: int, extra: str = "") -> Path:
    path = tmp / "policies.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\n"
        "spec:\n  clusterIP: 10.96.7.7\n  ports: [{name: http, port: %d, targetPort: %d}]\n%s"
        % (service, NAMESPACE, service_port, service_port, extra)
    )
    return path


@contextlib.contextmanager
def registry(tmp: Path, service: str, service_port: int, extra_policies: str = "") -> Iterator[ConfigServer]:
    path = policies(tmp, service, service_port, extra_policies)
    with config_server(tmp, path, ["--lease-seconds", "600"]) as server:
        yield server


def register(
    server: ConfigServer, instance: Instance, app: str, state: str = "registered", **extra: Any
) -> Dict[str, Any]:
    body = dict(
        {
            "namespace": NAMESPACE,
            "pod": instance.pod,
            "app": app,
            "ip": instance.ip,
            "port": instance.port,
            "tag": instance.tag,
            "state": state,
        },
        **extra,
    )
    request = urllib.request.Request(
        server.url + "/v1/register",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10, context=server.context()) as answer:
        return json.loads(answer.read())


def client_env(server: ConfigServer, tmp: Path, **extra: str) -> Dict[str, str]:
    env = {
        "PILOTFISH_CONFIG_URL": server.url,
        "PILOTFISH_CONFIG_CA": str(server.ca),
        "PILOTFISH_APP": "caller",
        "PILOTFISH_POD_NAMESPACE": NAMESPACE,
        "PILOTFISH_POD_NAME": "caller-0",
        "PILOTFISH_STATUS_HOST": "127.0.0.1",
        "PILOTFISH_STATUS_PORT": str(free_port()),
        "PILOTFISH_CACHE_DIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def run_client(
    python: str,
    env: Dict[str, str],
    scenario: Dict[str, Any],
    agent: bool = True,
    timeout: float = 180,
    pythonpath: Sequence[str] = (),
) -> Dict[str, Any]:
    """Run the routed client with ``scenario``; its JSON report (raises with its output on failure).

    ``pythonpath``: directories ahead of the venv's packages (another urllib3, say)."""
    paths = [*pythonpath, str(APPS)]
    full = agent_env(env, paths) if agent else dict(env, PYTHONPATH=os.pathsep.join(paths))
    started = time.monotonic()
    done = subprocess.run(
        [python, str(APPS / "routed_client.py"), json.dumps(scenario)],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            "client failed (%s) after %.1fs:\n%s\n%s"
            % (done.returncode, time.monotonic() - started, done.stdout[-4000:], done.stderr[-6000:])
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1])
    report["stderr"] = done.stderr
    return report


PYTHON = sys.executable
