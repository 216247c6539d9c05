"""pilotfish's cluster side: the admission webhook and the central config service.

One FastAPI application (:func:`pilotfish_webhook.app.create_app`) with a router
per concern, served over HTTPS by ``pilotfish-webhook serve``.
"""

__version__ = "0.1.0"
