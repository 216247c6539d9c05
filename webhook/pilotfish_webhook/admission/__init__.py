"""The admission webhook: which pods (``select``), what changes (``mutate``), the
AdmissionReview contract (``review``), and the HTTP router (``router``)."""

from pilotfish_webhook.admission.mutate import InjectionConfig
from pilotfish_webhook.admission.router import admission_router

__all__ = ["InjectionConfig", "admission_router"]
