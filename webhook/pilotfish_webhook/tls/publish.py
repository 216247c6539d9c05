"""Who must trust the CA: the webhook configuration (``caBundle``) and the agents (``pilotfish-ca``).

Every sync of the keeper patches ``caBundle`` into the MutatingWebhookConfiguration and
publishes the bundle as ConfigMap ``pilotfish-ca`` into namespaces (agents mount it as
``PILOTFISH_CONFIG_CA``). None of this happens inside an admission request, so the webhook
itself stays ``sideEffects: None``.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Set, Tuple

from pilotfish_webhook.admission.contract import CA_CONFIGMAP
from pilotfish_webhook.kube import Conflict, KubeAPI, Obj
from pilotfish_webhook.tls.secret import b64

log = logging.getLogger("pilotfish_webhook.tls")

NEVER_PUBLISHED = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def patch_ca_bundle(api: KubeAPI, webhook_configuration: str, ca_bundle: bytes) -> bool:
    """Put ``ca_bundle`` into every webhook of the configuration; True when it changed.

    The patch starts with a ``test`` of ``resourceVersion``, so a concurrent edit makes it
    fail instead of silently writing over a webhook list that changed under us.
    """
    current = api.read_webhook_configuration(webhook_configuration)
    if current is None:
        log.warning("MutatingWebhookConfiguration %s not found; caBundle not set", webhook_configuration)
        return False
    wanted = b64(ca_bundle)
    ops: List[Obj] = []
    for index, webhook in enumerate(current.get("webhooks") or []):
        client_config = webhook.get("clientConfig") or {}
        if client_config.get("caBundle") != wanted:
            op = "replace" if "caBundle" in client_config else "add"
            ops.append({"op": op, "path": "/webhooks/%d/clientConfig/caBundle" % index, "value": wanted})
    if not ops:
        return False
    version = (current.get("metadata") or {}).get("resourceVersion")
    if version:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    api.patch_webhook_configuration(webhook_configuration, ops)
    log.info(
        "patched caBundle into %d webhook(s) of %s", len(ops) - (1 if version else 0), webhook_configuration
    )
    return True


def _publishable(namespace: Obj) -> Optional[str]:
    ns = (namespace.get("metadata") or {}).get("name")
    if not ns or ns in NEVER_PUBLISHED or (namespace.get("status") or {}).get("phase") == "Terminating":
        return None
    return str(ns)


def _publish_into(api: KubeAPI, ns: str, text: str) -> bool:
    """Create or update ``pilotfish-ca`` in one namespace; True when it changed."""
    existing = api.read_config_map(ns, CA_CONFIGMAP)
    if existing is None:
        api.create_config_map(
            ns,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CA_CONFIGMAP, "labels": {"app.kubernetes.io/name": "pilotfish"}},
                "data": {"ca.crt": text},
            },
        )
        return True
    if (existing.get("data") or {}).get("ca.crt") != text:
        api.replace_config_map(ns, CA_CONFIGMAP, dict(existing, data={"ca.crt": text}))
        return True
    return False


def publish_ca(api: KubeAPI, ca_bundle: bytes, skip: Optional[Set[str]] = None) -> Tuple[int, Set[str]]:
    """ConfigMap ``pilotfish-ca`` (key ``ca.crt``) in every namespace not in ``skip``.

    Returns how many changed and the namespaces now holding the bundle.
    """
    text = ca_bundle.decode()
    changed, done = 0, set()
    for namespace in api.list_namespaces():
        ns = _publishable(namespace)
        if ns is None:
            continue
        if skip is not None and ns in skip:
            done.add(ns)
            continue
        try:
            changed += _publish_into(api, ns, text)
            done.add(ns)
        except Conflict:
            done.add(ns)  # another replica is writing the same content
        except Exception:
            log.exception("could not publish %s into namespace %s", CA_CONFIGMAP, ns)
    return changed, done
