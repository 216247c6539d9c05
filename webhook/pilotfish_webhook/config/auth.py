"""Who is calling the config API.

In a cluster every agent call carries the pod's projected service-account token
(audience ``pilotfish``, mounted by the webhook). We ask the API server to
review it (TokenReview) and learn the namespace and — because projected tokens
are bound to their pod — the pod name (``authentication.kubernetes.io/pod-name``
in ``status.user.extra``). That is what lets a pod change only its own
registration. Reviews are cached for a short while by token hash: a thousand
agents long-polling must not mean a thousand TokenReviews every 30 s.

Embedded mode (a laptop, the demo, tests) has no API server to ask: callers are
anonymous and the registry trusts what they send.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Dict, Optional, Protocol, Tuple

from pilotfish_webhook import kube
from pilotfish_webhook.config.registry import Caller

if TYPE_CHECKING:
    from pilotfish_webhook.kube import ApiClient

AUDIENCE = "pilotfish"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
SA_PREFIX = "system:serviceaccount:"


class Unauthorized(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def bearer(header: Optional[str]) -> str:
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Authenticator(Protocol):
    """Who a bearer token belongs to (raises :class:`Unauthorized`); ``mode`` names the scheme."""

    @property
    def mode(self) -> str: ...

    def authenticate(self, token: str) -> Caller: ...


class AnonymousAuth:
    """Embedded mode: everyone is an unauthenticated caller."""

    mode = "none"

    def authenticate(self, token: str) -> Caller:
        return Caller()


class TokenReviewAuth:
    """Authenticate bearer tokens with TokenReview (needs ``create tokenreviews`` RBAC)."""

    mode = "tokenreview"

    def __init__(
        self, api_client: Optional[ApiClient], audience: str = AUDIENCE, cache_seconds: float = 60.0
    ) -> None:
        self.api_client = api_client
        self.audience = audience
        self.cache_seconds = cache_seconds
        self._cache: Dict[str, Tuple[float, Caller]] = {}
        self._lock = threading.Lock()
        self.reviews = 0

    def authenticate(self, token: str) -> Caller:
        if not token:
            raise Unauthorized("missing bearer token (the pod's projected token, audience %r)" % AUDIENCE)
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        caller = self._review(token)
        with self._lock:
            if len(self._cache) > 10000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[digest] = (now + self.cache_seconds, caller)
        return caller

    def _review(self, token: str) -> Caller:
        self.reviews += 1
        status = kube.review_token(self.api_client, token, self.audience)
        if status is None or not status.authenticated:
            reason = (status.error if status is not None else None) or "token not authenticated"
            raise Unauthorized("token rejected: %s" % reason)
        if status.audiences is not None and self.audience not in status.audiences:
            raise Unauthorized("token is not for audience %r" % self.audience)
        user = status.user
        username = str(user.username or "") if user is not None else ""
        if not username.startswith(SA_PREFIX):
            raise Unauthorized("not a service account: %r" % username, 403)
        namespace = username[len(SA_PREFIX) :].split(":", 1)[0]
        extra = (user.extra or {}) if user is not None else {}
        pods = extra.get(POD_NAME_EXTRA) or []
        return Caller(namespace=namespace, pod=str(pods[0]) if pods else None, username=username)
