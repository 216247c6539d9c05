"""Which agents are live in this process, as seen from inside the app.

Used only by the ``/_bench/agents`` routes, never on the measured path.
"""

from __future__ import annotations

import sys
from typing import Any, Dict


def loaded_agents(app: Any) -> Dict[str, Any]:
    bootstrap = sys.modules.get("_pilotfish_agent.bootstrap")
    return {
        "pilotfish": bool(getattr(bootstrap, "loaded", False)),
        "pilotfish_modules": sorted(m for m in sys.modules if m.split(".")[0] == "_pilotfish_agent"),
        # OTel's Flask/FastAPI instrumentors swap the class (or mark the instance).
        "otel": bool(getattr(app, "_is_instrumented_by_opentelemetry", False))
        or type(app).__name__.startswith("_Instrumented"),
        "otel_modules": len([m for m in sys.modules if m.startswith("opentelemetry")]),
    }
