"""The ASGI types every layer of the server shares (the same shapes as Starlette's).

The server is a stack of plain ASGI callables around the FastAPI app: the body gate
(:mod:`.bodies`), the admission fast path (:mod:`.admission.router`) and the config
long-polls (:mod:`.config.router`).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
