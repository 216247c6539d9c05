"""Nothing that goes wrong inside the agent changes what the app does.

Spec (docs/agent.md): an exception raised inside our hooks, a patch target
missing or renamed in an unexpected library version, and bad env values all
leave the app's behaviour identical to a run without the agent; the agent says
what happened once, on stderr, prefixed ``pilotfish:``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.agent import run_python
from support.interpreters import require_app_python, require_interpreter
from support.servers import RunningServer


def _sitecustomize_that_breaks(tmp_path: Path, code: str) -> Path:
    """The app's own sitecustomize (it runs after ours) sabotages one agent internal."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(code))
    return tmp_path


def test_an_exception_inside_the_inbound_wrapper_leaves_responses_identical(tmp_path: Path) -> None:
    python = require_app_python("3.11")
    broken = _sitecustomize_that_breaks(
        tmp_path,
        """
        import _pilotfish_agent.inbound.request as request

        def classify(path, user_agent):
            raise RuntimeError("boom inside the agent")

        request.classify = classify
        """,
    )
    answers = []
    for agent in (False, True):
        with RunningServer("waitress", python, agent=agent, pythonpath=(str(broken),)) as server:
            bodies = [server.get("/headers", headers={"User-Agent": "t"}) for _ in range(5)]
            answers.append([(r.status, {k: v for k, v in r.json().items() if k != "host"}) for r in bodies])
            log = server.output()
    assert answers[0] == answers[1]
    assert log.count("pilotfish: warning: inbound accounting failed") == 1


def test_a_library_whose_patch_target_was_renamed_still_imports_and_runs(tmp_path: Path) -> None:
    python = require_interpreter("3.11")
    fake = tmp_path / "gunicorn" / "workers"
    fake.mkdir(parents=True)
    (tmp_path / "gunicorn" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "base.py").write_text("class RenamedWorker:\n    def load_app(self):\n        return 'app'\n")
    code = "import gunicorn.workers.base as b; print(b.RenamedWorker().load_app())"
    bare = run_python(python, ["-c", code], agent=False, pythonpath=[str(tmp_path)])
    ours = run_python(python, ["-c", code], pythonpath=[str(tmp_path)], env={"PILOTFISH_LOG_LEVEL": "info"})
    assert (ours.returncode, ours.stdout) == (bare.returncode, bare.stdout) == (0, "app\n")
    assert ours.stderr.count("pilotfish:") == 1
    assert "could not instrument gunicorn.workers.base" in ours.stderr


def test_a_bad_env_value_warns_once_and_the_default_is_used() -> None:
    python = require_app_python("3.11")
    with RunningServer("waitress", python, env={"PILOTFISH_WARMUP_SECONDS": "soon"}) as server:
        status = server.wait_status(lambda s: s["ready"], timeout=20)
        for _ in range(3):
            server.get("/")
        assert status["config"]["warmup_seconds"] == 120.0
        assert status["config_sources"]["warmup_seconds"] == "default"
        log = server.output()
    assert (
        log.count("pilotfish: warning: PILOTFISH_WARMUP_SECONDS='soon' is invalid (expected a number)") == 1
    )


def test_the_kill_switch_leaves_a_server_without_any_agent() -> None:
    """No agent, no /status; only the bootstrap's readiness stand-in answers the status port,
    so a pod whose kill switch the webhook could not see still becomes Ready."""
    python = require_app_python("3.11")
    with RunningServer("waitress", python, env={"PILOTFISH_ENABLED": "false"}) as server:
        assert server.get("/").status == 200
        status = server.status_get("/status")
        readiness = server.status_get("/readiness")
        log = server.output()
    assert status.status == 404 and b"PILOTFISH_ENABLED turns the agent off" in status.body
    assert readiness.status == 200 and b"app listens on 127.0.0.1" in readiness.body
    assert "pilotfish" not in log


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn"])
def test_an_exception_inside_the_asgi_wrapper_leaves_responses_identical(tmp_path: Path, kind: str) -> None:
    """Both paths of the ASGI wrapper (the usual request, and probes and tagged requests)
    meet a counter that raises on every use; the app answers as without the agent."""
    python = require_app_python("3.11")
    broken = _sitecustomize_that_breaks(
        tmp_path,
        """
        import _pilotfish_agent.shared as shared

        class Broken:
            def __getattr__(self, name):
                raise RuntimeError("boom inside the agent")

        def claim():
            shared.process_slot = Broken()
            return shared.process_slot

        shared.claim = claim
        """,
    )
    requests = [{}, {"User-Agent": "kube-probe/1.31"}, {"x-pilotfish-tag": "gray"}, {"User-Agent": "t"}]
    answers = []
    for agent in (False, True):
        with RunningServer(kind, python, agent=agent, pythonpath=(str(broken),)) as server:
            got = [server.get("/headers", headers=h) for h in requests for _ in range(3)]
            answers.append([(r.status, {k: v for k, v in r.json().items() if k != "host"}) for r in got])
            log = server.output()
    assert answers[0] == answers[1]
    assert log.count("pilotfish: warning: inbound accounting failed") == 1
