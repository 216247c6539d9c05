"""The one way the cluster side reaches the Kubernetes API: the official ``kubernetes`` client, typed.

Every module of ``pilotfish_webhook`` that calls the API server goes through here, so this
file lists every call the server makes (and so the RBAC it needs, deploy/):

- the certificate keeper (``tls/``): :class:`KubeAPI`, plain dicts in and out (Secrets,
  ConfigMaps, Namespaces, the MutatingWebhookConfiguration);
- the config service (``config/``): TokenReview (:func:`review_token`), GovernancePolicy
  list + watch (:func:`list_custom_objects`, :func:`custom_objects_lister`), Pods,
  EndpointSlices and Services list + watch (:func:`all_namespaces_lister`, :func:`list_raw`,
  :class:`Watch`), a Pod annotation patch (:func:`patch_pod`).

The client package is imported on first use, so ``serve`` without ``--in-cluster`` never
loads it. Its few untyped entry points (config loading, ``watch.Watch``) are called through
``Any`` here and nowhere else.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

if TYPE_CHECKING:
    from kubernetes.client import ApiClient as ApiClient
    from kubernetes.client import V1TokenReviewStatus

Obj = Dict[str, Any]
# A list call of the client (e.g. ``CoreV1Api.list_pod_for_all_namespaces``): called with
# ``_preload_content=False`` it returns the raw response; :class:`Watch` streams its changes.
Lister = Callable[..., Any]

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_GONE = 410


class Conflict(Exception):
    """HTTP 409: someone else created or changed the object first."""


def make_api_client(kubeconfig: Optional[str] = None) -> ApiClient:
    """An ``ApiClient``: the pod's service account, or ``kubeconfig`` when given."""
    from kubernetes import client, config

    if kubeconfig:
        from_file: Any = config.new_client_from_config
        made: ApiClient = from_file(config_file=kubeconfig)
        return made
    in_cluster: Any = config.load_incluster_config
    in_cluster()
    return client.ApiClient()


def status_of(problem: BaseException) -> Optional[int]:
    """The HTTP status of an ``ApiException`` from the client; None for any other exception."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(problem, ApiException):
        return int(problem.status) if problem.status is not None else None
    return None


class KubeAPI:
    """The calls the certificate keeper makes; objects round-trip as dicts (the wire format).

    ``_preload_content=False`` returns the raw JSON. A missing object is ``None``; HTTP 409
    raises :class:`Conflict`.
    """

    def __init__(self, api_client: Optional[ApiClient] = None, kubeconfig: Optional[str] = None) -> None:
        from kubernetes import client

        if api_client is None:
            api_client = make_api_client(kubeconfig)
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[Obj]:
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except Exception as problem:
            status = status_of(problem)
            if status == HTTP_NOT_FOUND:
                return None
            if status == HTTP_CONFLICT:
                raise Conflict(str(getattr(problem, "reason", problem)))
            raise
        found: Obj = json.loads(response.data)
        return found

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


# --------------------------------------------------------------------------- the config service


def review_token(api_client: Optional[ApiClient], token: str, audience: str) -> Optional[V1TokenReviewStatus]:
    """POST a TokenReview of ``token`` for ``audience``; the API server's verdict."""
    from kubernetes import client

    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience]))
    return client.AuthenticationV1Api(api_client).create_token_review(review).status


def list_custom_objects(api_client: Optional[ApiClient], group: str, version: str, plural: str) -> Obj:
    """Every object of a custom resource, cluster-wide, as the API's list (a dict)."""
    listing: Obj = custom_objects_lister(api_client)(group, version, plural)
    return listing


def custom_objects_lister(api_client: Optional[ApiClient]) -> Lister:
    """The cluster-wide list call of custom objects (args: group, version, plural), to watch."""
    from kubernetes import client

    return client.CustomObjectsApi(api_client).list_cluster_custom_object


def all_namespaces_lister(api_client: Optional[ApiClient], kind: str) -> Lister:
    """The all-namespaces list call of ``kind``: ``Pod``, ``EndpointSlice`` or ``Service``."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    listers: Dict[str, Lister] = {
        "Pod": core.list_pod_for_all_namespaces,
        "EndpointSlice": client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces,
        "Service": core.list_service_for_all_namespaces,
    }
    return listers[kind]


def list_raw(lister: Lister) -> Obj:
    """One call of ``lister``, the list as the API sent it (items stay plain dicts)."""
    listing: Obj = json.loads(lister(_preload_content=False).data)
    return listing


def patch_pod(api_client: Optional[ApiClient], namespace: str, name: str, patch: Obj) -> Optional[Obj]:
    """A merge patch of one Pod; the patched Pod as a dict (None if the API answered none)."""
    from kubernetes import client

    patched = client.CoreV1Api(api_client).patch_namespaced_pod(name, namespace, patch)
    if patched is None:
        return None
    serialise: Any = (api_client or client.ApiClient()).sanitize_for_serialization
    obj = serialise(patched)
    return obj if isinstance(obj, dict) else None


class Watch:
    """``kubernetes.watch.Watch``, typed: the events of one watch of a list call, as dicts.

    Each event has ``type`` (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) and ``raw_object``
    (the object as the API sent it).
    """

    def __init__(self) -> None:
        from kubernetes import watch

        make: Any = watch.Watch
        self._watch: Any = make()

    def stream(self, lister: Lister, *args: Any, **kwargs: Any) -> Iterator[Obj]:
        events: Iterator[Obj] = self._watch.stream(lister, *args, **kwargs)
        return events

    def stop(self) -> None:
        self._watch.stop()
