"""What the server does when its certificate changes: load it into the listening SSLContext.

Two sources rotate the pair on disk: :class:`~pilotfish_webhook.tls.keeper.CertKeeper`
(``--in-cluster``) and :class:`~pilotfish_webhook.tls.watch.FileWatcher` (a pair issued
elsewhere, e.g. cert-manager). Both are a :class:`RotatingCerts`.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Callable, Optional, Protocol

from pilotfish_webhook.tls.certs import CertPaths

log = logging.getLogger("pilotfish_webhook.tls")

OnRotate = Callable[[CertPaths], Any]


class RotatingCerts(Protocol):
    """A serving pair kept current by a background thread."""

    def start(self) -> CertPaths:
        """Begin (the pair is on disk when this returns); where the pair is."""
        ...

    def on_rotate(self, callback: OnRotate) -> None:
        """Call ``callback(paths)`` after each change of the pair on disk."""
        ...


class HasSSLContext(Protocol):
    """A server configuration holding its listener's context (``uvicorn.Config`` after ``load()``)."""

    @property
    def ssl(self) -> Optional[ssl.SSLContext]: ...


def ssl_reloader(server_config: HasSSLContext) -> Callable[[CertPaths], None]:
    """A rotation callback for a ``uvicorn.Config``: load the new pair into its SSLContext.

    uvicorn keeps one SSLContext for the listener; new handshakes use whatever chain was
    loaded last, so a rotated certificate is served without a restart.
    """

    def reload(paths: CertPaths) -> None:
        context = getattr(server_config, "ssl", None)
        if context is not None:
            context.load_cert_chain(str(paths.cert), str(paths.key))
            log.info("serving the rotated certificate from %s", paths.cert)

    return reload
