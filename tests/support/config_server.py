"""A real ``pilotfish-webhook serve --policies FILE`` in a subprocess, over HTTPS on loopback."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from support.servers import free_port
from support.wait import GiveUp, eventually

BIN = Path(sys.executable).parent


@dataclass
class ConfigServer:
    url: str
    ca: Path
    policies: Optional[Path]
    proc: subprocess.Popen
    log: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def config_server(
    tmp: Path, policies: Optional[Path], extra: Optional[List[str]] = None, timeout: float = 20.0
) -> Iterator[ConfigServer]:
    port = free_port()  # not port 0: `serve --listen` refuses it, and the URL is needed before the start
    certs = tmp / "certs"
    log = tmp / ("server-%d.log" % port)
    args = [str(BIN / "pilotfish-webhook"), "serve", "--listen", "127.0.0.1:%d" % port]
    args += ["--certs-dir", str(certs)]
    if policies is not None:
        args += ["--policies", str(policies)]
    args += extra or []
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    server = ConfigServer("https://127.0.0.1:%d" % port, certs / "ca.crt", policies, proc, log)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise GiveUp("config server exited: %s" % server.output())
            urllib.request.urlopen(server.url + "/healthz", timeout=1, context=server.context()).read()
            return True

        eventually(healthy, timeout, "the config server's /healthz", interval=0.1, context=server.output)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


EXAMPLE_POLICIES = Path(__file__).resolve().parent.parent.parent / "deploy" / "examples" / "policies.yaml"


@contextlib.contextmanager
def example_config_server(tmp: Path, extra: Optional[List[str]] = None) -> Iterator[ConfigServer]:
    """A config server on a copy of the shipped example policies (tests may rewrite the copy)."""
    policies = tmp / "policies.yaml"
    shutil.copy(EXAMPLE_POLICIES, policies)
    with config_server(tmp, policies, extra) as running:
        yield running
