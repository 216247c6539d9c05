"""The local cluster lives in hack/cluster (run as ``python -m hack.cluster`` from the repository root)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support.cluster import Api  # noqa: E402


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An API-only cluster (no node: pods are stored, never run) for the module's tests."""
    from hack.cluster.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("cluster"), node=False, log_size=500)
    cluster.start()
    try:
        yield Api(cluster)
    finally:
        cluster.stop()
