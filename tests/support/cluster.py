"""Helpers for tests against the local cluster (hack/cluster): kubectl, the kubernetes client, waiting."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any, Optional

import pytest

KUBECTL = shutil.which("kubectl")


class Api:
    """A running cluster and the two clients users have: kubectl and the ``kubernetes`` package."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.kubeconfig = cluster.kubeconfig

    def kubectl(
        self, *args: str, check: bool = True, input: Optional[str] = None
    ) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            pytest.skip("kubectl is not installed on this machine")
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                "kubectl %s failed (%d): %s%s" % (" ".join(args), done.returncode, done.stdout, done.stderr)
            )
        return done

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))
