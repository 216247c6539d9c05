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
def test_an_mse_fleet_gets_x_mse_tag_and_its_own_baggage_key_from_env(minor: str) -> None:
    python = require_app_python(minor)
    env = {"PILOTFISH_TAG_HEADERS": "x-mse-tag,x-pilotfish-tag", "PILOTFISH_BAGGAGE_KEY": "lane"}
    with CaptureServer() as server:
        done = run_python(python, [str(APP), server.url, "gray"], env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        captured = by_path(server.take())
    assert sorted(captured) == sorted(PATHS)
    for path, raw in captured.items():
        assert header(raw, "x-mse-tag") == "gray", path
        assert header(raw, "x-pilotfish-tag") is None, path
        assert header(raw, "baggage") == "lane=gray", path


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


def test_the_tags_status_section_shows_how_requests_are_tagged(central) -> None:
    central(
        tag_headers=["x-mse-tag"],
        lanes=[
            {
                "name": "beta",
                "tag": "gray",
                "match": [{"source": "header", "name": "X-Group", "values": ["beta"]}],
            }
        ],
    )
    section = install.status()
    assert section["tag_headers"] == ["x-mse-tag"]
    assert section["baggage_key"] == "pilotfish-tag"
    assert section["lanes"] == [
        {
            "name": "beta",
            "tag": "gray",
            "match": [{"source": "header", "name": "x-group", "op": "exact", "values": ["beta"]}],
            "percentage": 100.0,
            "hash": None,
        }
    ]


def test_start_up_loads_neither_typing_nor_a_client_library(tmp_path) -> None:
    """install() only registers hooks: the start-up budget (at most 20 ms, docs/benchmarks.md)."""
    script = (
        "import sys; print(sorted(m for m in ('typing', 'httpx', 'aiohttp', 'grpc', 'http.client',"
        " '_pilotfish_agent.tags.inbound', '_pilotfish_agent.integrations.http_client') if m in sys.modules))"
    )
    done = run_python(sys.executable, ["-c", script], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_a_patch_is_installed_when_the_app_imports_the_library(tmp_path) -> None:
    script = (
        "import sys; from _pilotfish_agent.tags import install; before = list(install.installed);"
        " import http.client; from concurrent.futures import ThreadPoolExecutor;"
        " print(before, install.installed)"
    )
    done = run_python(sys.executable, ["-c", script], timeout=30)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().split("] [")
    assert "http.client" not in before
    assert "http.client" in after and "concurrent.futures.thread" in after
