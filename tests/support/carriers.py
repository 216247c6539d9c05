"""A request's headers as each inbound carrier presents them to the tag extractors."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from pilotfish.tags import inbound


def environ(**headers: str) -> Dict[str, str]:
    """A WSGI environ with the given headers (``x_user_id="7"`` -> ``HTTP_X_USER_ID``)."""
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


def asgi(**headers: str) -> List[Tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def grpc_md(**headers: str) -> Tuple[Tuple[str, str], ...]:
    return tuple((k.replace("_", "-"), v) for k, v in headers.items())


ALL_CARRIERS: List[Tuple[str, Callable[..., Any]]] = [
    ("wsgi", lambda **h: inbound.tag_from_environ(environ(**h))),
    ("asgi", lambda **h: inbound.tag_from_asgi_headers(asgi(**h))),
    ("grpc", lambda **h: inbound.tag_from_grpc_metadata(grpc_md(**h))),
]
