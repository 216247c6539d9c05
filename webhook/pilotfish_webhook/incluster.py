"""In-cluster TLS: one CA and serving certificate for every replica, kept in a Secret.

Why a Secret: with two replicas behind one Service, the API server checks whichever
replica it reaches against the one ``caBundle`` of the MutatingWebhookConfiguration,
so replicas must agree on the CA. The first replica to start creates the Secret;
the others lose the create race (HTTP 409) and read it. Rotation is optimistic the
same way: replace with the read ``resourceVersion``, re-read on conflict.

Rotation: the serving certificate (90 days) is renewed 30 days before expiry; the CA
(10 years) is renewed a year before, and the old CA stays in the published bundle
(``ca-bundle.crt``) while it is still valid, so a pod whose replica still serves the
old chain is never rejected. Every sync also patches ``caBundle`` into the webhook
configuration and publishes the bundle as ConfigMap ``pilotfish-ca`` into namespaces
(agents mount it as ``PILOTFISH_CONFIG_CA``). None of this happens inside an admission
request, so the webhook itself stays ``sideEffects: None``.

The Kubernetes API is reached through :class:`KubeAPI`, whose methods exchange plain
dicts (the wire format), so the logic is tested against recorded API objects served
by a stand-in API server over HTTP (tests/webhook/test_incluster.py).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from cryptography import x509

from pilotfish_webhook.admission.contract import CA_CONFIGMAP
from pilotfish_webhook.tls import CertPaths, _write, make_ca, make_serving_cert

log = logging.getLogger("pilotfish_webhook.incluster")

Obj = Dict[str, Any]

SERVING_VALIDITY = dt.timedelta(days=90)
RENEW_SERVING_BEFORE = dt.timedelta(days=30)
RENEW_CA_BEFORE = dt.timedelta(days=365)
CA_BUNDLE = "ca-bundle.crt"
NEVER_PUBLISHED = frozenset({"kube-system", "kube-public", "kube-node-lease"})


class Conflict(Exception):
    """HTTP 409: someone else created or changed the object first."""


def make_api_client(kubeconfig: Optional[str] = None) -> Any:
    """A ``kubernetes`` ApiClient: the pod's service account, or ``kubeconfig`` when given."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


class KubeAPI:
    """The handful of API calls the keeper makes, over the official ``kubernetes`` client.

    ``_preload_content=False`` returns the raw JSON, so objects round-trip as dicts.
    """

    def __init__(self, api_client: Any = None, kubeconfig: Optional[str] = None) -> None:
        from kubernetes import client

        if api_client is None:
            api_client = make_api_client(kubeconfig)
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._exception = client.exceptions.ApiException

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[Obj]:
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except self._exception as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise Conflict(str(exc.reason))
            raise
        return json.loads(response.data)

    def read_secret(self, namespace: str, name: str) -> Optional[Obj]:
        return self._call(self._core.read_namespaced_secret, name, namespace)

    def create_secret(self, namespace: str, body: Obj) -> Optional[Obj]:
        return self._call(self._core.create_namespaced_secret, namespace, body)

    def replace_secret(self, namespace: str, name: str, body: Obj) -> Optional[Obj]:
        return self._call(self._core.replace_namespaced_secret, name, namespace, body)

    def read_webhook_configuration(self, name: str) -> Optional[Obj]:
        return self._call(self._admission.read_mutating_webhook_configuration, name)

    def patch_webhook_configuration(self, name: str, patch: List[Obj]) -> Optional[Obj]:
        return self._call(self._admission.patch_mutating_webhook_configuration, name, patch)

    def list_namespaces(self) -> List[Obj]:
        found = self._call(self._core.list_namespace)
        return list((found or {}).get("items") or [])

    def read_config_map(self, namespace: str, name: str) -> Optional[Obj]:
        return self._call(self._core.read_namespaced_config_map, name, namespace)

    def create_config_map(self, namespace: str, body: Obj) -> Optional[Obj]:
        return self._call(self._core.create_namespaced_config_map, namespace, body)

    def replace_config_map(self, namespace: str, name: str, body: Obj) -> Optional[Obj]:
        return self._call(self._core.replace_namespaced_config_map, name, namespace, body)


# --------------------------------------------------------------------------- certificate material


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) else b""


def _not_after(pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _covers(pem: bytes, hosts: Sequence[str]) -> bool:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    return all(h in names for h in hosts)


def _pems(bundle: bytes) -> List[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + marker + b"\n" for part in bundle.split(marker) if part.strip()]


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
            "ca.crt": _b64(self.ca_cert),
            "ca.key": _b64(self.ca_key),
            "tls.crt": _b64(self.cert),
            "tls.key": _b64(self.key),
            CA_BUNDLE: _b64(self.ca_bundle),
        }


def fresh(hosts: Sequence[str]) -> Material:
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, hosts, SERVING_VALIDITY)
    return Material(ca_cert, ca_key, cert, key, ca_cert)


def renewed(old: Material, hosts: Sequence[str], now: dt.datetime) -> Optional[Material]:
    """The rotated material, or None when ``old`` is good for a while yet."""
    ca_due = _not_after(old.ca_cert) - now < RENEW_CA_BEFORE
    cert_due = _not_after(old.cert) - now < RENEW_SERVING_BEFORE or not _covers(old.cert, hosts)
    if not (ca_due or cert_due):
        return None
    ca_cert, ca_key = make_ca() if ca_due else (old.ca_cert, old.ca_key)
    cert, key = make_serving_cert(ca_cert, ca_key, hosts, SERVING_VALIDITY)
    # Keep every CA that is still valid in the bundle, newest first, so both chains verify
    # while replicas and the API server catch up.
    still_valid = [pem for pem in _pems(old.ca_bundle) if _not_after(pem) > now and pem != ca_cert]
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


def patch_ca_bundle(api: KubeAPI, webhook_configuration: str, ca_bundle: bytes) -> bool:
    """Put ``ca_bundle`` into every webhook of the configuration; True when it changed.

    The patch starts with a ``test`` of ``resourceVersion``, so a concurrent edit makes it
    fail instead of silently writing over a webhook list that changed under us.
    """
    current = api.read_webhook_configuration(webhook_configuration)
    if current is None:
        log.warning("MutatingWebhookConfiguration %s not found; caBundle not set", webhook_configuration)
        return False
    wanted = _b64(ca_bundle)
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


# --------------------------------------------------------------------------- the keeper


class CertKeeper:
    """Keeps ``certs_dir`` in sync with the shared Secret and the cluster objects that trust it."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        secret_name: str,
        webhook_configuration: str,
        hosts: Sequence[str],
        certs_dir: Path,
        interval_seconds: float = 3600.0,
        namespace_check_seconds: float = 10.0,
    ) -> None:
        self.api, self.namespace, self.secret_name = api, namespace, secret_name
        self.webhook_configuration, self.hosts = webhook_configuration, list(hosts)
        self.paths = CertPaths(certs_dir)
        self.interval = interval_seconds
        self.namespace_check = namespace_check_seconds
        self._callbacks: List[Callable[[CertPaths], Any]] = []
        self._stop = threading.Event()
        self._bundle = b""
        self._published: Set[str] = set()
        self._nudge = threading.Event()

    def on_rotate(self, callback: Callable[[CertPaths], Any]) -> None:
        self._callbacks.append(callback)

    def sync(self, now: Optional[dt.datetime] = None) -> bool:
        """One round; True when the serving certificate on disk changed."""
        material = load_or_create(self.api, self.namespace, self.secret_name, self.hosts, now)
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        changed = not self.paths.cert.exists() or self.paths.cert.read_bytes() != material.cert
        if changed:
            _write(self.paths.ca_key, material.ca_key, secret=True)
            _write(self.paths.ca_cert, material.ca_bundle)
            _write(self.paths.key, material.key, secret=True)
            _write(self.paths.cert, material.cert)
        patch_ca_bundle(self.api, self.webhook_configuration, material.ca_bundle)
        _, self._published = publish_ca(self.api, material.ca_bundle)
        self._bundle = material.ca_bundle
        return changed

    def publish_new_namespaces(self) -> int:
        """Publish the bundle into namespaces created since the last round (one list call)."""
        if not self._bundle:
            return 0
        changed, self._published = publish_ca(self.api, self._bundle, skip=self._published)
        return changed

    def namespace_seen(self, namespace: str) -> None:
        """A pod of ``namespace`` is being admitted: publish the CA there now if it lacks it.

        Called on the admission path, so it only wakes the publisher (no API call here); the
        ConfigMap then exists within a round trip, before the kubelet mounts the pod's volumes,
        instead of up to ``namespace_check_seconds`` later (the agents would start without it).
        """
        if namespace and namespace not in self._published:
            self._nudge.set()

    def start(self) -> CertPaths:
        self.sync()
        threading.Thread(target=self._loop, name="pilotfish-cert-keeper", daemon=True).start()
        # Namespaces created after start need the CA before their first injected pod starts,
        # not at the next hourly round: a cheap list every few seconds finds them.
        threading.Thread(target=self._namespace_loop, name="pilotfish-ca-publisher", daemon=True).start()
        return self.paths

    def stop(self) -> None:
        self._stop.set()
        self._nudge.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.sync():
                    for callback in self._callbacks:
                        callback(self.paths)
            except Exception:
                log.exception("certificate sync failed; retrying in %.0f s", self.interval)

    def _namespace_loop(self) -> None:
        while True:
            self._nudge.wait(self.namespace_check)
            self._nudge.clear()
            if self._stop.is_set():
                return
            try:
                self.publish_new_namespaces()
            except Exception:
                log.exception("publishing %s into new namespaces failed", CA_CONFIGMAP)


def ssl_reloader(server_config: Any) -> Callable[[CertPaths], None]:
    """A rotation callback for a ``uvicorn.Config``: load the new pair into its SSLContext.

    uvicorn keeps one SSLContext for the listener; new handshakes use whatever chain was
    loaded last, so a rotated certificate is served without a restart.
    """

    def reload(paths: CertPaths) -> None:
        context = getattr(server_config, "ssl", None)
        if context is not None:
            context.load_cert_chain(str(paths.cert), str(paths.key))
            log.info("serving the rotated certificate from %s", paths.cert)

    return reload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("in-cluster TLS")
    if not any("--in-cluster" in action.option_strings for action in parser._actions):
        # The config service's flags (cli.add_config_flags) define --in-cluster when present:
        # one switch for "running in a cluster", read by both.
        group.add_argument(
            "--in-cluster",
            action="store_true",
            help="keep the CA in a Secret, patch caBundle into the webhook configuration, rotate",
        )
    group.add_argument(
        "--kubeconfig",
        default=None,
        metavar="FILE",
        help="reach the API server through this kubeconfig instead of the pod's service account",
    )
    group.add_argument("--secret-name", default="pilotfish-webhook-tls")
    group.add_argument("--webhook-config-name", default="pilotfish")
    group.add_argument(
        "--service-name", default="pilotfish", help="Service in front of the webhook (for SANs)"
    )
    group.add_argument(
        "--rotation-check-seconds",
        type=float,
        default=3600.0,
        help="how often to check the Secret (--in-cluster) or an externally issued tls.crt for rotation",
    )


def service_hosts(service: str, namespace: str) -> List[str]:
    return [
        "%s.%s.svc" % (service, namespace),
        "%s.%s.svc.cluster.local" % (service, namespace),
        "%s.%s" % (service, namespace),
        service,
    ]


class FileWatcher:
    """Reload a certificate that something else rotates on disk (cert-manager's Secret volume).

    Used when ``--certs-dir`` holds ``tls.crt``/``tls.key`` but no ``ca.key``: the pair was
    issued elsewhere, so the server must not mint its own, only follow updates. The kubelet
    swaps Secret volume contents atomically, so comparing bytes is enough.
    """

    def __init__(self, paths: CertPaths, interval_seconds: float = 60.0) -> None:
        self.paths = paths
        self.interval = interval_seconds
        self._callbacks: List[Callable[[CertPaths], Any]] = []
        self._stop = threading.Event()
        self._seen = self._read()

    def _read(self) -> bytes:
        try:
            return self.paths.cert.read_bytes() + self.paths.key.read_bytes()
        except OSError:
            return b""

    def on_rotate(self, callback: Callable[[CertPaths], Any]) -> None:
        self._callbacks.append(callback)

    def start(self) -> CertPaths:
        threading.Thread(target=self._loop, name="pilotfish-cert-watcher", daemon=True).start()
        return self.paths

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            current = self._read()
            if current and current != self._seen:
                self._seen = current
                for callback in self._callbacks:
                    try:
                        callback(self.paths)
                    except Exception:
                        log.exception("could not load the rotated certificate from %s", self.paths.directory)


def externally_issued(directory: Path) -> bool:
    """A serving pair without our CA key: issued by cert-manager or an admin, never overwritten."""
    paths = CertPaths(directory)
    return paths.cert.exists() and paths.key.exists() and not paths.ca_key.exists()


def keeper_from_args(args: argparse.Namespace, extra_hosts: Sequence[str]) -> Optional[CertKeeper]:
    if not getattr(args, "in_cluster", False):
        return None
    namespace = getattr(args, "namespace", None) or os.environ.get("POD_NAMESPACE", "pilotfish-system")
    hosts = [*service_hosts(args.service_name, namespace), *extra_hosts]
    return CertKeeper(
        KubeAPI(kubeconfig=args.kubeconfig),
        namespace,
        args.secret_name,
        args.webhook_config_name,
        hosts,
        args.certs_dir,
        args.rotation_check_seconds,
    )
