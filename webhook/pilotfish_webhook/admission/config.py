"""How this installation injects: images, mount mode, config service URL, time budgets."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Optional

from pilotfish_webhook import __version__


def new_offline_token() -> str:
    """A per-pod secret for ``/offline``: 192 bits, URL-safe, so it fits a header verbatim."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class InjectionConfig:
    """Everything the mutation needs to know about this installation."""

    agent_image: str = "ghcr.io/pilotfish/agent"  # repository; the tag is the agent version
    agent_version: str = __version__
    mount_mode: str = "copy"  # "copy": init container + emptyDir; "image": Kubernetes image volume
    config_url: str = "https://pilotfish.pilotfish-system.svc:443"
    own_namespace: str = "pilotfish-system"
    offline_max_wait_seconds: int = 30  # agent default of PILOTFISH_OFFLINE_MAX_WAIT_SECONDS
    app_shutdown_seconds: int = 30  # what the app had before we took part of its grace period
    volume_size_limit: str = "64Mi"
    state_size_limit: str = "16Mi"  # the agent's writable state: a config cache and a few markers
    token_expiration_seconds: int = 3600
    new_token: Callable[[], str] = field(default=new_offline_token, compare=False)
    # Called with the namespace of every pod reviewed: the CA publisher makes sure pilotfish-ca
    # is there before the pod's containers start, instead of at its next round.
    namespace_seen: Optional[Callable[[str], None]] = field(default=None, compare=False)

    def image_for(self, version: str) -> str:
        return "%s:%s" % (self.agent_image, version)
