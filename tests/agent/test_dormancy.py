"""Processes that never serve stay dormant; the first listening socket wakes the agent.

Spec (docs/agent.md): pip, compileall, migrations and one-off scripts pay
only for registering import hooks: no thread, no status port, no shared memory.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.agent import run_python
from support.interpreters import matrix_versions, require_interpreter
from support.servers import free_port, http_get
from support.wait import eventually

DORMANT_PROBE = textwrap.dedent(
    """
    import socket, http.client, json, threading, sys, os, glob
    boot = sys.modules.get("_pilotfish_agent.bootstrap")
    print(bool(boot and boot.loaded), threading.active_count(),
          "_pilotfish_agent.status_server" in sys.modules,
          os.environ.get("PILOTFISH_SHM") is None)
    """
)


@pytest.mark.parametrize("minor", matrix_versions())
def test_a_script_that_never_listens_starts_no_thread_and_no_status_server(minor: str) -> None:
    python = require_interpreter(minor)
    result = run_python(python, ["-c", DORMANT_PROBE])
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "True 1 False True\n"


@pytest.mark.parametrize("minor", matrix_versions())
def test_compileall_runs_exactly_as_without_the_agent(minor: str, tmp_path: Path) -> None:
    python = require_interpreter(minor)
    (tmp_path / "mod.py").write_text("x = 1\n")
    args = ["-m", "compileall", "-q", str(tmp_path)]
    ours = run_python(python, args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, "", "")


def test_the_first_listening_socket_wakes_the_agent_and_serves_status(tmp_path: Path) -> None:
    python = require_interpreter("3.11")
    status_port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            """
            import socket, sys, time
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            print(s.getsockname()[1], flush=True)
            time.sleep(float(sys.argv[1]))
            """
        )
    )
    import subprocess

    from support.agent import agent_env

    env = agent_env({"PILOTFISH_STATUS_PORT": str(status_port), "PILOTFISH_STATUS_HOST": "127.0.0.1"})
    proc = subprocess.Popen([python, str(script), "5"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        app_port = int(proc.stdout.readline())  # type: ignore[union-attr]
        status = http_get(status_port, "/status").json()
        assert status["runtime"]["role"] == "owner"
        assert status["runtime"]["app_addresses"] == ["127.0.0.1:%d" % app_port]
        assert status["gates"]["app-listening"]["ok"] is True
    finally:
        proc.kill()
        proc.wait()


def test_readiness_stays_503_until_every_start_up_step_has_added_its_gates(tmp_path: Path) -> None:
    """The status server answers from the moment the app listens, before the lifecycle has
    plugged in its gates (probe, registration delay, ...). In that window the app-listening
    gate alone must not make /readiness 200: kubelet would send traffic during the delay.
    A start-up step that takes 2 s (here a sleeping wake callback) holds the window open."""
    python = require_interpreter("3.11")
    status_port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            """
            import socket, time
            from _pilotfish_agent import runtime
            runtime.on_wake(lambda: time.sleep(2))
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1], flush=True)
            s.listen()
            print("started", flush=True)
            time.sleep(10)
            """
        )
    )
    import subprocess

    from support.agent import agent_env

    env = agent_env(
        {
            "PILOTFISH_STATUS_PORT": str(status_port),
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PILOTFISH_READINESS_ENABLED": "false",  # only app-listening and online decide
        }
    )
    proc = subprocess.Popen([python, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]  # bound; listen() comes next
        # within the wake's 2 s: the status port opens before the app's listen() returns
        during = eventually(
            lambda: http_get(status_port, "/readiness"), 1.0, "the status port", interval=0.01
        )
        assert during.status == 503, during.json()
        assert "still adding its readiness gates" in during.json()["failing"]["app-listening"]
        assert proc.stdout.readline() == "started\n"  # type: ignore[union-attr]
        after = http_get(status_port, "/readiness")
        assert after.status == 200, after.json()
    finally:
        proc.kill()
        proc.wait()
