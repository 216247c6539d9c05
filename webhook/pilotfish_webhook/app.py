"""The cluster-side FastAPI application: admission webhook + central config service."""

from __future__ import annotations

from fastapi import FastAPI

from pilotfish_webhook import __version__


def create_app() -> FastAPI:
    app = FastAPI(title="pilotfish", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    return app
