"""The central config service: GovernancePolicy in, live config and an instance registry out.

Modules: ``schema`` (the one schema), ``merge`` (scopes -> flat agent config),
``store`` (policies in force + errors), ``sources`` (watched file, in-cluster watch),
``registry`` (leases in memory / Pods + EndpointSlices), ``auth`` (TokenReview),
``router`` (the ``/v1`` API and :func:`~pilotfish_webhook.config.router.attach`).
"""
