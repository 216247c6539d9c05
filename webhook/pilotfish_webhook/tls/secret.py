"""The CA and serving certificate every replica shares, kept in one Secret.

Why a Secret: with two replicas behind one Service, the API server checks whichever
replica it reaches against the one ``caBundle`` of the MutatingWebhookConfiguration,
so replicas must agree on the CA. The first replica to start creates the Secret;
the others lose the create race (HTTP 409) and read it. Rotation is optimistic the
same way: replace with the read ``resourceVersion``, re-read on conflict.

Rotation: the serving certificate (90 days) is renewed 30 days before expiry; the CA
(10 years) is renewed a year before, and the old CA stays in the published bundle
(``ca-bundle.crt``) while it is still valid, so a pod whose replica still serves the
old chain is never rejected.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any, Dict, Optional, Sequence

from pilotfish_webhook.kube import Conflict, KubeAPI, Obj
from pilotfish_webhook.tls.certs import covers, make_ca, make_serving_cert, not_after, split_bundle

log = logging.getLogger("pilotfish_webhook.tls")

# The shared serving certificate is short-lived and rotated (self-made ones last a year, certs.py).
SHARED_SERVING_VALIDITY = dt.timedelta(days=90)
RENEW_SERVING_BEFORE = dt.timedelta(days=30)
RENEW_CA_BEFORE = dt.timedelta(days=365)
CA_BUNDLE = "ca-bundle.crt"


def b64(data: bytes) -> str:
    """``data`` as the base64 text of a Secret's ``data`` or a ``caBundle``."""
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) else b""


class Material:
    """The contents of the Secret: CA, serving pair, and the CA bundle clients trust."""

    def __init__(self, ca_cert: bytes, ca_key: bytes, cert: bytes, key: bytes, ca_bundle: bytes) -> None:
        self.ca_cert, self.ca_key, self.cert, self.key, self.ca_bundle = ca_cert, ca_key, cert, key, ca_bundle

    @classmethod
    def from_secret(cls, secret: Obj) -> Optional[Material]:
        data = secret.get("data") or {}
        parts = [_unb64(data.get(k)) for k in ("ca.crt", "ca.key", "tls.crt", "tls.key")]
        if not all(parts):
            return None
        ca_cert, ca_key, cert, key = parts
        return cls(ca_cert, ca_key, cert, key, _unb64(data.get(CA_BUNDLE)) or ca_cert)

    def secret_data(self) -> Dict[str, str]:
        return {
            "ca.crt": b64(self.ca_cert),
            "ca.key": b64(self.ca_key),
            "tls.crt": b64(self.cert),
            "tls.key": b64(self.key),
            CA_BUNDLE: b64(self.ca_bundle),
        }


def fresh(hosts: Sequence[str]) -> Material:
    """A new CA and a serving certificate for ``hosts``."""
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, hosts, SHARED_SERVING_VALIDITY)
    return Material(ca_cert, ca_key, cert, key, ca_cert)


def renewed(old: Material, hosts: Sequence[str], now: dt.datetime) -> Optional[Material]:
    """The rotated material, or None when ``old`` is good for a while yet."""
    ca_due = not_after(old.ca_cert) - now < RENEW_CA_BEFORE
    cert_due = not_after(old.cert) - now < RENEW_SERVING_BEFORE or not covers(old.cert, hosts)
    if not (ca_due or cert_due):
        return None
    ca_cert, ca_key = make_ca() if ca_due else (old.ca_cert, old.ca_key)
    cert, key = make_serving_cert(ca_cert, ca_key, hosts, SHARED_SERVING_VALIDITY)
    # Keep every CA that is still valid in the bundle, newest first, so both chains verify
    # while replicas and the API server catch up.
    still_valid = [pem for pem in split_bundle(old.ca_bundle) if not_after(pem) > now and pem != ca_cert]
    bundle = b"".join([ca_cert, *still_valid])
    return Material(ca_cert, ca_key, cert, key, bundle)


def load_or_create(
    api: KubeAPI, namespace: str, name: str, hosts: Sequence[str], now: Optional[dt.datetime] = None
) -> Material:
    """The shared material: read the Secret, create it, or rotate it; safe under races."""
    now = now or dt.datetime.now(dt.timezone.utc)
    for _ in range(5):
        secret = api.read_secret(namespace, name)
        if secret is None:
            material = fresh(hosts)
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/name": "pilotfish"},
                },
                "type": "Opaque",
                "data": material.secret_data(),
            }
            try:
                api.create_secret(namespace, body)
                log.info("created certificate Secret %s/%s", namespace, name)
                return material
            except Conflict:
                continue  # another replica won the race: read theirs
        current = Material.from_secret(secret)
        if current is None:
            material = fresh(hosts)  # unreadable Secret (edited by hand?): start over
        else:
            rotated = renewed(current, hosts, now)
            if rotated is None:
                return current
            material = rotated
        secret = dict(secret, data=material.secret_data())
        try:
            api.replace_secret(namespace, name, secret)
            log.info("rotated certificate Secret %s/%s", namespace, name)
            return material
        except Conflict:
            continue
    raise RuntimeError("could not agree on Secret %s/%s after 5 attempts" % (namespace, name))
