"""The patches install themselves in a real process under the agent, on every interpreter of the matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pilotfish.tags import install
from support.agent import run_python
from support.capture import CaptureServer, header
from support.interpreters import matrix_versions, require_app_python

APP = Path(__file__).resolve().parent / "apps" / "outbound_app.py"
PATHS = ["/requests-pool", "/urllib-thread", "/httpx-task", "/aiohttp-task", "/httpx-executor"]


def by_path(raws):
    return {raw.split(b" ")[1].decode(): raw for raw in raws}


@pytest.mark.matrix
@pytest.mark.parametrize("minor", matrix_versions())
def test_every_client_and_concurrency_style_carries_the_tag_under_the_agent(minor: str) -> None:
    python = require_app_python(minor)
    with CaptureServer() as server:
        done = run_python(python, [str(APP), server.url, "gray"], timeout=60)
        assert done.returncode == 0, done.stderr
        captured = by_path(server.take())
    assert sorted(captured) == sorted(PATHS)
    for path, raw in captured.items():
        assert header(raw, "x-pilotfish-tag") == "gray", (path, raw)
        assert header(raw, "baggage") == "pilotfish-tag=gray", (path, raw)


@pytest.mark.matrix
@pytest.mark.parametrize("minor", matrix_versions())
def test_untagged_calls_under_the_agent_are_byte_for_byte_the_calls_without_it(minor: str) -> None:
    python = require_app_python(minor)
    with CaptureServer() as server:
        alone = run_python(python, [str(APP), server.url], agent=False, timeout=60)
        assert alone.returncode == 0, alone.stderr
        without_agent = by_path(server.take())
        under = run_python(python, [str(APP), server.url], timeout=60)
        assert under.returncode == 0, under.stderr
        with_agent = by_path(server.take())
    assert sorted(without_agent) == sorted(PATHS)
    assert with_agent == without_agent
    assert "pilotfish" not in under.stderr


# --- the minimal post-import hook of install.register ---------------------------


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("pf_hooked")]:
        del sys.modules[name]


def test_a_hook_runs_once_after_its_module_is_imported(module_dir) -> None:
    (module_dir / "pf_hooked_a.py").write_text("VALUE = 1\n")
    calls = []
    install.register("pf_hooked_a", lambda module: calls.append(module.VALUE))
    assert calls == []
    import pf_hooked_a  # type: ignore[import-not-found]

    assert calls == [1]
    assert type(pf_hooked_a.__loader__).__name__ == "SourceFileLoader"  # the real loader, not ours
    del sys.modules["pf_hooked_a"]
    import pf_hooked_a  # type: ignore[import-not-found]

    assert calls == [1]


def test_a_hook_for_an_imported_module_runs_at_once(module_dir) -> None:
    calls = []
    install.register("json", lambda module: calls.append(module.__name__))
    assert calls == ["json"]


def test_a_hook_on_a_submodule_runs_when_the_submodule_is_imported(module_dir) -> None:
    (module_dir / "pf_hooked_pkg").mkdir()
    (module_dir / "pf_hooked_pkg" / "__init__.py").write_text("")
    (module_dir / "pf_hooked_pkg" / "sub.py").write_text("X = 2\n")
    calls = []
    install.register("pf_hooked_pkg.sub", lambda module: calls.append(module.X))
    import pf_hooked_pkg  # type: ignore[import-not-found]

    assert calls == []
    import pf_hooked_pkg.sub  # type: ignore[import-not-found]  # noqa: F401

    assert calls == [2]


def test_a_failing_hook_never_fails_the_apps_import(module_dir, capsys) -> None:
    (module_dir / "pf_hooked_b.py").write_text("VALUE = 1\n")
    install.register("pf_hooked_b", lambda module: 1 / 0)
    import pf_hooked_b  # type: ignore[import-not-found]

    assert pf_hooked_b.VALUE == 1


def test_a_module_that_does_not_exist_still_raises_import_error(module_dir) -> None:
    install.register("pf_hooked_missing", lambda module: None)
    with pytest.raises(ImportError):
        import pf_hooked_missing  # type: ignore[import-not-found]  # noqa: F401


def test_the_status_section_reports_the_instance_tag_and_the_rules(central, monkeypatch) -> None:
    from pilotfish import settings

    settings.load({"PILOTFISH_TAG": "gray"})
    central(
        tag_headers=["x-mse-tag"],
        lanes=[{"name": "beta", "tag": "gray", "match": {"header": "x-group", "value": "beta"}}],
    )
    section = install.status()
    assert section["tag"] == "gray"
    assert section["tag_headers"] == ["x-mse-tag"]
    assert section["baggage_key"] == "pilotfish-tag"
    assert section["lanes"] == [{"name": "beta", "tag": "gray", "header": "x-group", "values": ["beta"]}]
