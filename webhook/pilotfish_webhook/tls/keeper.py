"""``--in-cluster`` TLS: keep the serving pair on disk in sync with the shared Secret.

Each round (hourly) reads, creates or rotates the Secret (:mod:`.secret`), writes the pair
into the certificate directory when it changed, patches ``caBundle`` into the webhook
configuration and publishes ``pilotfish-ca`` (:mod:`.publish`). A second thread publishes
into namespaces created since, every few seconds or at once when a pod of a namespace
without the bundle is admitted (:meth:`CertKeeper.namespace_seen`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import List, Optional, Sequence, Set

from pilotfish_webhook.admission.contract import CA_CONFIGMAP
from pilotfish_webhook.kube import KubeAPI
from pilotfish_webhook.tls.certs import CertPaths, write_atomically
from pilotfish_webhook.tls.publish import patch_ca_bundle, publish_ca
from pilotfish_webhook.tls.rotation import OnRotate
from pilotfish_webhook.tls.secret import load_or_create

log = logging.getLogger("pilotfish_webhook.tls")


def service_hosts(service: str, namespace: str) -> List[str]:
    """The names clients use for ``service`` in ``namespace``: the serving certificate's SANs."""
    return [
        "%s.%s.svc" % (service, namespace),
        "%s.%s.svc.cluster.local" % (service, namespace),
        "%s.%s" % (service, namespace),
        service,
    ]


class CertKeeper:
    """Keeps ``certs_dir`` in sync with the shared Secret and the cluster objects that trust it."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        secret_name: str,
        webhook_configuration: str,
        hosts: Sequence[str],
        certs_dir: Path,
        interval_seconds: float = 3600.0,
        namespace_check_seconds: float = 10.0,
    ) -> None:
        self.api, self.namespace, self.secret_name = api, namespace, secret_name
        self.webhook_configuration, self.hosts = webhook_configuration, list(hosts)
        self.paths = CertPaths(certs_dir)
        self.interval = interval_seconds
        self.namespace_check = namespace_check_seconds
        self._callbacks: List[OnRotate] = []
        self._stop = threading.Event()
        self._bundle = b""
        self._published: Set[str] = set()
        self._nudge = threading.Event()

    def on_rotate(self, callback: OnRotate) -> None:
        self._callbacks.append(callback)

    def sync(self, now: Optional[dt.datetime] = None) -> bool:
        """One round; True when the serving certificate on disk changed."""
        material = load_or_create(self.api, self.namespace, self.secret_name, self.hosts, now)
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        changed = not self.paths.cert.exists() or self.paths.cert.read_bytes() != material.cert
        if changed:
            write_atomically(self.paths.ca_key, material.ca_key, secret=True)
            write_atomically(self.paths.ca_cert, material.ca_bundle)
            write_atomically(self.paths.key, material.key, secret=True)
            write_atomically(self.paths.cert, material.cert)
        patch_ca_bundle(self.api, self.webhook_configuration, material.ca_bundle)
        _, self._published = publish_ca(self.api, material.ca_bundle)
        self._bundle = material.ca_bundle
        return changed

    def publish_new_namespaces(self) -> int:
        """Publish the bundle into namespaces created since the last round (one list call)."""
        if not self._bundle:
            return 0
        changed, self._published = publish_ca(self.api, self._bundle, skip=self._published)
        return changed

    def namespace_seen(self, namespace: str) -> None:
        """A pod of ``namespace`` is being admitted: publish the CA there now if it lacks it.

        Called on the admission path, so it only wakes the publisher (no API call here); the
        ConfigMap then exists within a round trip, before the kubelet mounts the pod's volumes,
        instead of up to ``namespace_check_seconds`` later (the agents would start without it).
        """
        if namespace and namespace not in self._published:
            self._nudge.set()

    def start(self) -> CertPaths:
        self.sync()
        threading.Thread(target=self._loop, name="pilotfish-cert-keeper", daemon=True).start()
        # Namespaces created after start need the CA before their first injected pod starts,
        # not at the next hourly round: a cheap list every few seconds finds them.
        threading.Thread(target=self._namespace_loop, name="pilotfish-ca-publisher", daemon=True).start()
        return self.paths

    def stop(self) -> None:
        self._stop.set()
        self._nudge.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.sync():
                    for callback in self._callbacks:
                        callback(self.paths)
            except Exception:
                log.exception("certificate sync failed; retrying in %.0f s", self.interval)

    def _namespace_loop(self) -> None:
        while True:
            self._nudge.wait(self.namespace_check)
            self._nudge.clear()
            if self._stop.is_set():
                return
            try:
                self.publish_new_namespaces()
            except Exception:
                log.exception("publishing %s into new namespaces failed", CA_CONFIGMAP)
