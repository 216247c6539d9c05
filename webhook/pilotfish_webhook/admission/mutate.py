"""The pod mutation (docs/injection.md), as pure functions over plain dicts.

Input: a Pod as the API server sends it in an AdmissionReview (JSON decoded). Output:
the mutated Pod, the notes to show the user, and the ``pilotfish.io/status`` record.
No I/O, no Kubernetes client: everything the mutation needs is in :class:`InjectionConfig`.

Idempotence (a second pass adds nothing) is built into every step rather than bolted on:
objects we own outright (the init container and our three volumes) are *replaced by
name* with their desired form, so re-running converges on the current template (Istio
strips and re-renders for the same reason); things we share with the user (env,
mounts, probes, preStop, grace period) are only added when absent or recognised as
ours. Notes describe the resulting *state*, never the action taken, so the status
annotation of a second pass is identical to the first.

Unknown fields are never dropped: the pod is copied as JSON and only the keys named
here are touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from pilotfish_webhook import __version__
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.config import InjectionConfig, new_offline_token
from pilotfish_webhook.admission.objects import (
    AGENT_TREE_IN_IMAGE,
    agent_volume,
    init_container,
    state_volume,
    token_volume,
)
from pilotfish_webhook.admission.patch import clone
from pilotfish_webhook.admission.podspec import (
    add_mount,
    env_entry,
    literal_env,
    put_by_name,
    set_env,
    status_port,
)
from pilotfish_webhook.admission.probes import add_prestop, rewrite_readiness
from pilotfish_webhook.admission.standdown import why_the_agent_would_not_run

__all__ = [
    "InjectionConfig",
    "Mutation",
    "app_name",
    "init_container",
    "inject",
    "merge_pythonpath",
    "new_offline_token",
    "skip_pod",
]

Obj = Dict[str, Any]

# Istio/Linkerd/Dapr proxies are never Python apps; injecting them would rewrite their probes.
KNOWN_PROXY_CONTAINERS = frozenset({"istio-proxy", "linkerd-proxy", "daprd", "envoy", "cloudsql-proxy"})
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds
MAX_PORT = 65535
# Real pods inject a handful of containers. Beyond this many named (or previously injected)
# containers the pod is admitted untouched with a warning: the work per review and the size of
# the status annotation (the API server caps annotations at 256 KiB) stay bounded.
MAX_INJECTED_CONTAINERS = 64


@dataclass
class Mutation:
    """The result of :func:`inject`: the pod to admit and what to tell the user."""

    pod: Obj
    status: Optional[Obj]  # the pilotfish.io/status record written onto the pod (None: untouched)
    warnings: List[str] = field(default_factory=list)

    @property
    def injected(self) -> List[str]:
        return list((self.status or {}).get("containers", []))


# --------------------------------------------------------------------------- small readers


def offline_max_wait(container: Obj, config: InjectionConfig) -> int:
    value = literal_env(container, c.ENV_OFFLINE_MAX_WAIT)
    try:
        return max(0, int(float(value))) if value else config.offline_max_wait_seconds
    except ValueError:
        return config.offline_max_wait_seconds


def parse_status(annotations: Obj) -> Optional[Obj]:
    raw = annotations.get(c.STATUS_ANNOTATION)
    if not isinstance(raw, str):
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


def dump_status(status: Obj) -> str:
    return json.dumps(status, sort_keys=True, separators=(",", ":"))


_HASH_SUFFIX = re.compile(r"-[0-9]+$")


def app_name(meta: Obj) -> str:
    """PILOTFISH_APP: pilotfish.io/app, app.kubernetes.io/name, app, then the owner's name.

    Pods made by a Deployment only have ``generateName`` (``shop-7d4b9c8f6-``) and an owner
    ReplicaSet (``shop-7d4b9c8f6``) at admission time; the pod-template-hash is cut off so
    every revision of a Deployment reports the same app. CronJob Jobs lose their schedule
    suffix the same way.
    """
    labels = meta.get("labels") or {}
    for key in (c.APP_LABEL, "app.kubernetes.io/name", "app"):
        value = labels.get(key)
        if isinstance(value, str) and value:
            return value
    template_hash = labels.get("pod-template-hash")
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("name")]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is not None:
        name = str(owner["name"])
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            return name[: -len(template_hash) - 1]
        if owner.get("kind") == "Job":
            return _HASH_SUFFIX.sub("", name) or name
        return name
    base = str(meta.get("name") or meta.get("generateName") or "").rstrip("-")
    if template_hash and base.endswith("-" + template_hash):
        base = base[: -len(template_hash) - 1]
    return base or "unknown"


def pod_tag(meta: Obj) -> Optional[str]:
    labels = meta.get("labels") or {}
    for key in (c.TAG_LABEL, c.MSE_TAG_LABEL):
        value = labels.get(key)
        if isinstance(value, str) and value:
            return value
    return None


# --------------------------------------------------------------------------- container choice


def choose_containers(
    spec: Obj, annotations: Obj, previous: Optional[Obj]
) -> Tuple[List[Obj], Dict[str, str]]:
    """Which app containers to inject, and the ones asked for but not found (name -> why).

    ``pilotfish.io/containers`` wins; then the containers a previous pass injected (so a
    reinvocation after another webhook added a container keeps the same choice); then
    ``kubectl.kubernetes.io/default-container``; then the first container.
    """
    containers = [x for x in spec.get("containers") or [] if isinstance(x, dict)]
    by_name = {x.get("name"): x for x in containers}
    problems: Dict[str, str] = {}
    wanted = annotations.get(c.CONTAINERS_ANNOTATION)
    if isinstance(wanted, str) and wanted.strip():
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        chosen = []
        for name in dict.fromkeys(names):
            if name in by_name:
                chosen.append(by_name[name])
            else:
                problems[name] = "named in %s but the pod has no such container" % c.CONTAINERS_ANNOTATION
        return chosen, problems
    if previous and previous.get("containers"):
        chosen = [by_name[n] for n in previous["containers"] if n in by_name]
        if chosen:
            return chosen, problems
    default = annotations.get(c.KUBECTL_DEFAULT_CONTAINER)
    if isinstance(default, str) and default in by_name and default not in KNOWN_PROXY_CONTAINERS:
        return [by_name[default]], problems
    for container in containers:
        if container.get("name") not in KNOWN_PROXY_CONTAINERS:
            return [container], problems
    return [], problems


def container_problem(container: Obj) -> Optional[str]:
    """Why this container cannot be injected safely, or None."""
    if container.get("name") in KNOWN_PROXY_CONTAINERS:
        return "a proxy sidecar, not a Python app"
    stands_down = why_the_agent_would_not_run(container)
    if stands_down:
        return stands_down
    entry = env_entry(container, c.ENV_PYTHONPATH)
    if entry is not None and "valueFrom" in entry:
        return "PYTHONPATH comes from valueFrom; pilotfish never overwrites it (set it literally)"
    for mount in container.get("volumeMounts") or []:
        path = str(mount.get("mountPath", "")).rstrip("/")
        owner = mount.get("name")
        if path == c.MOUNT_PATH and owner != c.AGENT_VOLUME:
            return "volume %r is already mounted at %s" % (owner, c.MOUNT_PATH)
        if path == c.TOKEN_DIR and owner != c.TOKEN_VOLUME:
            return "volume %r is already mounted at %s" % (owner, c.TOKEN_DIR)
        if path == c.STATE_MOUNT and owner != c.STATE_VOLUME:
            return "volume %r is already mounted at %s" % (owner, c.STATE_MOUNT)
    if literal_env(container, c.ENV_STATUS_PORT) is not None:
        port = status_port(container)
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("containerPort") == port:
                return "the container itself uses port %d, its PILOTFISH_STATUS_PORT" % port
    return None


def assign_status_ports(spec: Obj, eligible: List[Obj]) -> Dict[str, str]:
    """One status port per injected container: they share the pod's network namespace.

    The first container without a literal PILOTFISH_STATUS_PORT gets 55199 (the API default,
    no env needed); the others, and any container whose pod already uses 55199, get the next
    free port written as a literal PILOTFISH_STATUS_PORT, which a second pass then reads back
    unchanged (idempotent). The search cursor only moves forward, so the work is linear in
    the pod's ports and containers. A container for which no port up to 65535 is free is
    returned (name -> why) and must not be injected.
    """
    taken = set()
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            for declared in (container.get("ports") or []) if isinstance(container, dict) else []:
                if isinstance(declared, dict) and isinstance(declared.get("containerPort"), int):
                    taken.add(declared["containerPort"])
    pending = []
    for container in eligible:
        if literal_env(container, c.ENV_STATUS_PORT) is not None:
            taken.add(status_port(container))
        else:
            pending.append(container)
    unplaced: Dict[str, str] = {}
    port = c.STATUS_PORT
    for container in pending:
        while port in taken:
            port += 1
        if port > MAX_PORT:
            unplaced[str(container.get("name"))] = "no free status port between %d and %d in the pod" % (
                c.STATUS_PORT,
                MAX_PORT,
            )
            continue
        taken.add(port)
        if port != c.STATUS_PORT:
            set_env(container, c.ENV_STATUS_PORT, {"value": str(port)})
    return unplaced


# --------------------------------------------------------------------------- name collisions


def pod_collision(spec: Obj) -> Optional[str]:
    """Names we would add that the user already uses (only asked when no previous injection)."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for item in spec.get(key) or []:
            if isinstance(item, dict) and item.get("name") == c.INIT_CONTAINER:
                return "the pod already has a container named %s" % c.INIT_CONTAINER
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and volume.get("name") in (
            c.AGENT_VOLUME,
            c.TOKEN_VOLUME,
            c.STATE_VOLUME,
        ):
            return "the pod already has a volume named %s" % volume["name"]
    return None


# --------------------------------------------------------------------------- per container


def merge_pythonpath(existing: Optional[str], from_annotation: Optional[str]) -> str:
    """Bootstrap dir first, then the container's literal value verbatim, then the annotation.

    The existing value is kept byte for byte (empty entries and ``$(VAR)`` references
    mean something), so running this twice gives the same string.
    """
    value = existing or ""
    if value != c.BOOTSTRAP_DIR and not value.startswith(c.BOOTSTRAP_DIR + ":"):
        value = c.BOOTSTRAP_DIR + (":" + value if value else "")
    present = value.split(":")
    for entry in (from_annotation or "").split(":"):
        entry = entry.strip()
        if entry and entry not in present:
            value += ":" + entry
            present.append(entry)
    return value


@dataclass
class _PodFacts:
    app: str
    tag: Optional[str]
    pythonpath_annotation: Optional[str]
    long_running: bool
    config: InjectionConfig


def inject_container(container: Obj, facts: _PodFacts, token: Optional[str], notes: List[str]) -> None:
    config = facts.config
    name = container.get("name")
    mount: Obj = {"name": c.AGENT_VOLUME, "mountPath": c.MOUNT_PATH, "readOnly": True}
    if config.mount_mode == "image":
        mount["subPath"] = AGENT_TREE_IN_IMAGE.strip("/")
    add_mount(container, mount)
    add_mount(container, {"name": c.TOKEN_VOLUME, "mountPath": c.TOKEN_DIR, "readOnly": True})
    add_mount(container, {"name": c.STATE_VOLUME, "mountPath": c.STATE_MOUNT})

    existing = literal_env(container, c.ENV_PYTHONPATH)
    # Judged on the user's part of the value only, so a second pass (which sees our
    # bootstrap prefix) reaches the same verdict.
    users_own = existing or ""
    if users_own == c.BOOTSTRAP_DIR or users_own.startswith(c.BOOTSTRAP_DIR + ":"):
        users_own = users_own[len(c.BOOTSTRAP_DIR) + 1 :]
    if not users_own and container.get("envFrom") and not facts.pythonpath_annotation:
        notes.append(
            "container %s: envFrom may set PYTHONPATH, which env overrides; "
            "put its value in the %s annotation" % (name, c.PYTHONPATH_ANNOTATION)
        )
    merged = merge_pythonpath(existing, facts.pythonpath_annotation)
    set_env(container, c.ENV_PYTHONPATH, {"value": merged}, overwrite=True)

    set_env(container, c.ENV_APP, {"value": facts.app})
    if facts.tag is not None:
        set_env(container, c.ENV_TAG, {"value": facts.tag})
    set_env(container, c.ENV_CONFIG_URL, {"value": config.config_url})
    set_env(container, c.ENV_CONFIG_CA, {"value": c.CA_FILE})
    set_env(container, c.ENV_TOKEN_FILE, {"value": c.TOKEN_FILE})
    # The mount point itself: it exists when the app starts (the agent does not create it).
    set_env(container, c.ENV_STATE_DIR, {"value": c.STATE_MOUNT})
    for env_name, field_path in (
        (c.ENV_POD_NAME, "metadata.name"),
        (c.ENV_POD_NAMESPACE, "metadata.namespace"),
        (c.ENV_POD_IP, "status.podIP"),
    ):
        set_env(
            container, env_name, {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}
        )
    if token is not None:
        set_env(container, c.ENV_OFFLINE_TOKEN, {"value": token})

    port = status_port(container)
    if facts.long_running:
        rewrite_readiness(container, port, notes)
        add_prestop(container, port, token, notes)


def _offline_token(containers: List[Obj], config: InjectionConfig) -> Tuple[Optional[str], bool]:
    """The pod's offline token: reuse one a previous pass wrote (idempotence), else a new one.

    Returns (token, usable): ``usable`` is False when a container takes the token from
    valueFrom, where we cannot read it for the preStop header.
    """
    for container in containers:
        entry = env_entry(container, c.ENV_OFFLINE_TOKEN)
        if entry is not None:
            if "valueFrom" in entry:
                return None, False
            if entry.get("value"):
                return str(entry["value"]), True
    return config.new_token(), True


# --------------------------------------------------------------------------- the whole pod


def _agent_version(annotations: Obj, config: InjectionConfig, notes: List[str]) -> str:
    pinned = annotations.get(c.AGENT_VERSION_ANNOTATION)
    if pinned is None:
        return config.agent_version
    if isinstance(pinned, str) and IMAGE_TAG.match(pinned):
        return pinned
    notes.append(
        "%s %r is not a valid image tag; using %s"
        % (c.AGENT_VERSION_ANNOTATION, pinned, config.agent_version)
    )
    return config.agent_version


def too_many_containers(count: int) -> str:
    return (
        "pilotfish: not injected: %d containers chosen for injection (by %s or a previous pass), "
        "more than the limit of %d; the pod was admitted unchanged"
        % (count, c.CONTAINERS_ANNOTATION, MAX_INJECTED_CONTAINERS)
    )


def skip_pod(pod: Obj, reason: str) -> Mutation:
    """Leave the pod as it is, except for a status record saying why (the one place users look)."""
    pod = clone(pod)
    status = {"version": __version__, "containers": [], "reason": reason}
    meta = pod.setdefault("metadata", {})
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = meta["annotations"] = {}
    annotations[c.STATUS_ANNOTATION] = dump_status(status)
    return Mutation(pod, status, ["pilotfish: not injected: " + reason])


def inject(pod: Obj, config: InjectionConfig, scratch: Optional[Obj] = None) -> Mutation:
    """Inject the agent into ``pod`` (not modified; the result holds a mutated copy).

    ``scratch``: an equal, independent copy of ``pod`` that may be mutated in place (the
    router parses the request body twice, which is cheaper than a deep copy).
    """
    pod = clone(pod) if scratch is None else scratch
    meta = pod.setdefault("metadata", {})
    spec = pod["spec"]
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = {}
    previous = parse_status(annotations)
    injected_before = bool(previous and previous.get("containers"))

    if not injected_before:
        collision = pod_collision(spec)
        if collision:
            return skip_pod(pod, collision)

    notes: List[str] = []
    version = _agent_version(annotations, config, notes)
    image = config.image_for(version)
    targets, skipped = choose_containers(spec, annotations, previous)
    if len(targets) + len(skipped) > MAX_INJECTED_CONTAINERS:
        # status None: the router admits the pod as it came, without a patch.
        return Mutation(pod, None, [too_many_containers(len(targets) + len(skipped))])
    eligible = []
    for container in targets:
        problem = container_problem(container)
        if problem:
            skipped[str(container.get("name"))] = problem
        else:
            eligible.append(container)

    unplaced = assign_status_ports(spec, eligible)
    if unplaced:
        skipped.update(unplaced)
        eligible = [x for x in eligible if str(x.get("name")) not in unplaced]

    status: Obj = {"version": __version__, "containers": [x["name"] for x in eligible]}
    if skipped:
        status["skipped"] = skipped
    if not eligible:
        status["reason"] = "no container to inject" if not skipped else "every chosen container was skipped"
        meta["annotations"] = annotations
        annotations[c.STATUS_ANNOTATION] = dump_status(status)
        warnings = ["pilotfish: container %s not injected: %s" % kv for kv in skipped.items()]
        return Mutation(pod, status, warnings or ["pilotfish: not injected: " + status["reason"]])

    restart_policy = spec.get("restartPolicy") or "Always"
    facts = _PodFacts(
        app=app_name(meta),
        tag=pod_tag(meta),
        pythonpath_annotation=annotations.get(c.PYTHONPATH_ANNOTATION) or None,
        long_running=restart_policy == "Always",
        config=config,
    )
    if not facts.long_running:
        notes.append(
            "restartPolicy %s: no readiness rewrite or preStop (run-to-completion pod)" % restart_policy
        )

    volumes = spec.setdefault("volumes", [])
    put_by_name(volumes, agent_volume(config, image))
    put_by_name(volumes, token_volume(config))
    put_by_name(volumes, state_volume(config))
    init_containers = spec.get("initContainers")
    if config.mount_mode == "copy":
        if init_containers is None:
            init_containers = spec["initContainers"] = []
        put_by_name(init_containers, init_container(image), front=True)
    elif init_containers:
        spec["initContainers"] = [x for x in init_containers if x.get("name") != c.INIT_CONTAINER]

    token, usable = _offline_token(eligible, config)
    for container in eligible:
        inject_container(container, facts, token if usable else None, notes)

    if facts.long_running:
        needed = max(offline_max_wait(x, config) for x in eligible) + config.app_shutdown_seconds
        current = spec.get("terminationGracePeriodSeconds")
        effective = (
            current if isinstance(current, int) and not isinstance(current, bool) else DEFAULT_GRACE_SECONDS
        )
        if effective < needed:
            spec["terminationGracePeriodSeconds"] = needed

    status["image"] = image
    status["mode"] = config.mount_mode
    if notes:
        status["notes"] = notes
    meta["annotations"] = annotations
    annotations[c.STATUS_ANNOTATION] = dump_status(status)
    warnings = ["pilotfish: container %s not injected: %s" % kv for kv in skipped.items()]
    warnings += ["pilotfish: " + note for note in notes]
    return Mutation(pod, status, warnings)
