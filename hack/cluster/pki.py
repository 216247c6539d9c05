"""The cluster's CA, the API server's serving certificate, and the kubeconfig that trusts them."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Sequence

from pilotfish_webhook.tls import make_ca, make_serving_cert

API_NAMES = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
]


class Pki:
    """Files under ``directory``: ca.crt, apiserver.crt/key, and a bearer token for kubectl."""

    def __init__(self, directory: Path, addresses: Sequence[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca_pem, ca_key = make_ca("local-cluster-ca")
        cert, key = make_serving_cert(
            self.ca_pem, ca_key, ["127.0.0.1", *addresses, *API_NAMES], dt.timedelta(days=30)
        )
        self.ca = directory / "ca.crt"
        self.cert = directory / "apiserver.crt"
        self.key = directory / "apiserver.key"
        self.ca.write_bytes(self.ca_pem)
        self.cert.write_bytes(cert)
        self.key.write_bytes(key)
        self.key.chmod(0o600)
        self.token = secrets.token_urlsafe(24)

    def write_kubeconfig(self, path: Path, server: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "\n".join(
                [
                    "apiVersion: v1",
                    "kind: Config",
                    "clusters:",
                    "- name: local",
                    "  cluster:",
                    "    server: %s" % server,
                    "    certificate-authority: %s" % self.ca,
                    "users:",
                    "- name: admin",
                    "  user:",
                    "    token: %s" % self.token,
                    "contexts:",
                    "- name: local",
                    "  context:",
                    "    cluster: local",
                    "    user: admin",
                    "    namespace: default",
                    "current-context: local",
                    "",
                ]
            )
        )
        path.chmod(0o600)
        return path
