"""A serving pair issued elsewhere (cert-manager, an admin): follow it on disk, never overwrite it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import List

from pilotfish_webhook.tls.certs import CertPaths
from pilotfish_webhook.tls.rotation import OnRotate

log = logging.getLogger("pilotfish_webhook.tls")


def externally_issued(directory: Path) -> bool:
    """A serving pair without our CA key: issued by cert-manager or an admin, never overwritten."""
    paths = CertPaths(directory)
    return paths.cert.exists() and paths.key.exists() and not paths.ca_key.exists()


class FileWatcher:
    """Reload a certificate that something else rotates on disk (cert-manager's Secret volume).

    Used when ``--certs-dir`` holds ``tls.crt``/``tls.key`` but no ``ca.key``: the pair was
    issued elsewhere, so the server must not mint its own, only follow updates. The kubelet
    swaps Secret volume contents atomically, so comparing bytes is enough.
    """

    def __init__(self, paths: CertPaths, interval_seconds: float = 60.0) -> None:
        self.paths = paths
        self.interval = interval_seconds
        self._callbacks: List[OnRotate] = []
        self._stop = threading.Event()
        self._seen = self._read()

    def _read(self) -> bytes:
        try:
            return self.paths.cert.read_bytes() + self.paths.key.read_bytes()
        except OSError:
            return b""

    def on_rotate(self, callback: OnRotate) -> None:
        self._callbacks.append(callback)

    def start(self) -> CertPaths:
        threading.Thread(target=self._loop, name="pilotfish-cert-watcher", daemon=True).start()
        return self.paths

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            current = self._read()
            if current and current != self._seen:
                self._seen = current
                for callback in self._callbacks:
                    try:
                        callback(self.paths)
                    except Exception:
                        log.exception("could not load the rotated certificate from %s", self.paths.directory)
