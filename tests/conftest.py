"""Shared fixtures. Interpreters that are absent skip with a reason naming them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.agent import ensure_agent_tree


@pytest.fixture(scope="session", autouse=True)
def agent_tree() -> Path:
    return ensure_agent_tree()
