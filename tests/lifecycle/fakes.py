"""Stand-ins for the lifecycle's collaborators (registrar, probe, clock) in unit tests."""

from __future__ import annotations

import threading
from typing import Any, List, Optional, Tuple


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeRegistrar:
    def __init__(self, outcome: str = "registered", block: Optional[threading.Event] = None) -> None:
        self.outcome = outcome
        self.block = block
        self.calls: List[Tuple[str, Any]] = []
        self.detail = ""

    def register(self, port: Optional[int]) -> str:
        self.calls.append(("register", port))
        if self.block is not None:
            self.block.wait(5)
        return self.outcome

    def deregister(self) -> str:
        self.calls.append(("deregister", None))
        return "deregistered"


class FakeProbe:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.checked_now = 0

    def gate(self) -> Tuple[bool, str]:
        return self.ok, "probe ok" if self.ok else "probe fails: HTTP 503"

    def check_now(self) -> None:
        self.checked_now += 1

    def describe(self) -> dict:
        return {"ok": self.ok}
