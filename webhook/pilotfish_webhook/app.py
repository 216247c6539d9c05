"""The cluster-side FastAPI application: admission webhook + central config service."""

from __future__ import annotations

from typing import Dict, Optional

from fastapi import FastAPI

from pilotfish_webhook import __version__
from pilotfish_webhook.admission import InjectionConfig, admission_router


def create_app(
    admission: Optional[InjectionConfig] = None,
) -> FastAPI:
    """The app with the routers that were asked for (``admission``: serve ``/mutate``)."""
    app = FastAPI(title="pilotfish", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> Dict[str, str]:
        return {"status": "ok", "version": __version__}

    if admission is not None:
        app.include_router(admission_router(admission))

    return app
