#!/usr/bin/env python3
"""``make demo``: the cluster side and a sample app under the agent, on this machine.

Starts, all on loopback:
- ``pilotfish-webhook serve`` over HTTPS with a generated CA (admission webhook and
  config service, policies from ``deploy/examples/policies.yaml`` when present);
- a plain Flask app under gunicorn (2 workers) with the agent injected exactly as in
  a pod: ``PYTHONPATH=build/agent-tree/bootstrap`` and the ``PILOTFISH_*`` env the
  webhook would set.

It prints what to open, then runs until Ctrl-C (or ``--seconds N``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE = ROOT / "build" / "demo"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, context: Optional[ssl.SSLContext] = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return True
        except urllib.error.HTTPError:
            return True  # it answered, even if not 200 (readiness may still be 503)
        except OSError:
            time.sleep(0.2)
    return False


def start_webhook(port: int) -> subprocess.Popen:
    args = [
        str(BIN / "pilotfish-webhook"),
        "serve",
        "--listen",
        "127.0.0.1:%d" % port,
        "--certs-dir",
        str(STATE / "certs"),
    ]
    policies = ROOT / "deploy" / "examples" / "policies.yaml"
    if policies.exists() and "--policies" in _serve_help():
        args += ["--policies", str(policies)]
    return subprocess.Popen(args)


def _serve_help() -> str:
    result = subprocess.run(
        [str(BIN / "pilotfish-webhook"), "serve", "--help"], capture_output=True, text=True
    )
    return result.stdout


def start_app(port: int, status_port: int, config_url: str) -> subprocess.Popen:
    env: Dict[str, str] = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT / "build" / "agent-tree" / "bootstrap"),
            "PILOTFISH_APP": "shop",
            "PILOTFISH_POD_NAME": "shop-demo-0",
            "PILOTFISH_POD_NAMESPACE": "demo",
            "PILOTFISH_POD_IP": "127.0.0.1",
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PILOTFISH_STATUS_PORT": str(status_port),
            "PILOTFISH_CONFIG_URL": config_url,
            "PILOTFISH_CONFIG_CA": str(STATE / "certs" / "ca.crt"),
            "PILOTFISH_LOG_LEVEL": "info",
        }
    )
    return subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-w",
            "2",
            "-b",
            "127.0.0.1:%d" % port,
            "--chdir",
            str(ROOT / "hack" / "demo"),
            "shop:app",
        ],
        env=env,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="pilotfish local demo")
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    # SIGTERM (a test, a supervisor) must stop the demo's servers too, not orphan them.
    signal.signal(signal.SIGTERM, _interrupt)
    STATE.mkdir(parents=True, exist_ok=True)
    webhook_port, app_port, status_port = free_port(), free_port(), free_port()
    procs = [start_webhook(webhook_port)]
    try:
        if not wait_http("https://127.0.0.1:%d/healthz" % webhook_port, context=_ca_context()):
            print("demo: the webhook server did not come up; see its output above", file=sys.stderr)
            return 1
        procs.append(start_app(app_port, status_port, "https://127.0.0.1:%d" % webhook_port))
        if not wait_http("http://127.0.0.1:%d/" % app_port):
            print("demo: the sample app did not come up; see its output above", file=sys.stderr)
            return 1
        status_up = wait_http("http://127.0.0.1:%d/status" % status_port, timeout=5)
        print(_banner(webhook_port, app_port, status_port, status_up), flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                print("demo: a process exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ca_context() -> ssl.SSLContext:
    ca = STATE / "certs" / "ca.crt"
    deadline = time.monotonic() + 10
    while not ca.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return ssl.create_default_context(cafile=str(ca))


def _banner(webhook_port: int, app_port: int, status_port: int, status_up: bool) -> str:
    status = (
        "  agent status   http://127.0.0.1:%d/status   (lifecycle state, gates, config version)\n"
        "  readiness      http://127.0.0.1:%d/readiness\n"
        "  metrics        http://127.0.0.1:%d/metrics\n" % (status_port, status_port, status_port)
        if status_up
        else "  agent status   (not serving yet in this build: http://127.0.0.1:%d/status)\n" % status_port
    )
    return (
        "\npilotfish demo is running. Open:\n"
        "  sample app     http://127.0.0.1:%d/        (Flask under gunicorn, agent injected)\n"
        "%s"
        "  cluster side   https://127.0.0.1:%d/healthz (CA: build/demo/certs/ca.crt)\n"
        "Try:  curl -H 'x-pilotfish-tag: gray' http://127.0.0.1:%d/\n"
        "Ctrl-C stops everything.\n" % (app_port, status, webhook_port, app_port)
    )


if __name__ == "__main__":
    sys.exit(main())
