"""Never stall a rollout: containers whose processes would not run the agent are not injected.

A container that literally turns the agent off (``PILOTFISH_ENABLED=false``) or visibly runs
``python -I``, ``-E`` or ``-S`` (no PYTHONPATH, or no ``site``: the agent never loads) keeps
its own probes and preStop, and the reason is in the warnings and ``pilotfish.io/status``.
Every test goes through ``check_mutation`` (patch applies, schema validates, idempotent).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import pytest
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.standdown import python_flags
from support.pods import check_mutation


def make_pod(
    containers: Optional[List[Dict[str, Any]]] = None,
    annotations: Optional[Dict[str, str]] = None,
    **spec: Any,
) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"name": "shop-1", "namespace": "shop", "labels": {"app": "shop"}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": containers or [app()], **spec},
    }


def app(name: str = "shop", **fields: Any) -> Dict[str, Any]:
    return {"name": name, "image": "shop:1", "ports": [{"name": "http", "containerPort": 8080}], **fields}


def env_of(container: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def first(pod: Dict[str, Any]) -> Dict[str, Any]:
    return pod["spec"]["containers"][0]


def status_of(pod: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"][c.STATUS_ANNOTATION])


APP_PROBE = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2}


def _disabled(value: str, **fields: Any) -> Dict[str, Any]:
    return app(env=[{"name": "PILOTFISH_ENABLED", "value": value}], readinessProbe=APP_PROBE, **fields)


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "OFF", " False ", "disabled"])
def test_the_kill_switch_leaves_the_container_and_its_probes_untouched(value: str) -> None:
    pod = make_pod([_disabled(value)])
    mutation = check_mutation(pod)
    assert first(mutation.pod) == first(pod), "probes, preStop, env and mounts exactly as written"
    assert mutation.injected == []
    assert "initContainers" not in mutation.pod["spec"], "no init container: no agent image to pull"
    why = status_of(mutation.pod)["skipped"]["shop"]
    assert "kill switch" in why and "probes and preStop are left as they are" in why
    assert any(
        w.startswith("pilotfish: container shop not injected:") and "kill switch" in w
        for w in mutation.warnings
    )


@pytest.mark.parametrize("value", ["true", "1", "", "yes"])
def test_a_kill_switch_that_keeps_the_agent_on_injects_as_usual(value: str) -> None:
    mutation = check_mutation(make_pod([_disabled(value)]))
    assert mutation.injected == ["shop"]
    assert first(mutation.pod)["readinessProbe"]["httpGet"]["path"] == "/readiness"


def test_a_kill_switch_from_value_from_cannot_be_seen_and_the_container_is_injected() -> None:
    """What the webhook cannot read it cannot honour: the agent tree's stand-in then answers
    readiness from the app's own probe (tests/agent/test_standin.py)."""
    source = {"configMapKeyRef": {"name": "pf", "key": "enabled"}}
    pod = make_pod([app(env=[{"name": "PILOTFISH_ENABLED", "valueFrom": source}], readinessProbe=APP_PROBE)])
    out = first(check_mutation(pod).pod)
    assert out["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert env_of(out)[c.ENV_APP_PROBE]


def test_only_the_container_with_the_kill_switch_is_left_alone() -> None:
    pod = make_pod(
        [_disabled("false", name="legacy"), app("shop")], annotations={c.CONTAINERS_ANNOTATION: "legacy,shop"}
    )
    mutation = check_mutation(pod)
    assert mutation.injected == ["shop"]
    assert mutation.pod["spec"]["containers"][0] == pod["spec"]["containers"][0]
    assert "kill switch" in status_of(mutation.pod)["skipped"]["legacy"]


@pytest.mark.parametrize(
    "command,args",
    [
        (["python", "-I", "app.py"], None),
        (["python3", "-E", "-m", "gunicorn", "app:app"], None),
        (["/usr/local/bin/python3.12", "-IS", "serve.py"], None),
        (["python"], ["-u", "-S", "main.py"]),
        (["python3", "-bE", "app.py"], None),
        (["sh", "-c", "exec python3 -I -m uvicorn app:app --port 8080"], None),
        (["/bin/bash", "-ec", "cd /srv && python -S app.py"], None),
    ],
)
def test_python_run_with_isolated_ignore_env_or_no_site_flags_is_not_injected(
    command: List[str], args: Any
) -> None:
    container = app(command=command, readinessProbe=APP_PROBE)
    if args:
        container["args"] = args
    pod = make_pod([container])
    mutation = check_mutation(pod)
    assert first(mutation.pod) == first(pod)
    why = status_of(mutation.pod)["skipped"]["shop"]
    assert why.startswith("python -") and "the agent would never load" in why
    assert any("the agent would never load" in w for w in mutation.warnings)


@pytest.mark.parametrize(
    "words,flags",
    [
        (["python", "-I", "app.py"], ["I"]),
        (["python", "-IS", "app.py"], ["I", "S"]),
        (["python", "-u", "-E", "app.py"], ["E"]),
        (["python", "app.py", "-I"], []),  # the app's own argument
        (["python", "-m", "tool", "-E"], []),  # the module's argument
        (["python", "-c", "print(1)", "-S"], []),
        (["python", "-cS"], []),  # -c's argument is "S"
        (["python", "-W", "-I", "app.py"], []),  # -W's argument is "-I"
        (["python", "-XI", "app.py"], []),  # -X's argument
        (["python", "-s", "app.py"], []),  # -s only skips the user site: sitecustomize still runs
        (["gunicorn", "-E", "x"], []),  # not python
        (["python-config", "-I"], []),
        (["sh", "-c", "python -E app.py"], ["E"]),
        (["sh", "-c", "echo python -I 'unterminated"], ["I"]),
        (["sh", "app.sh", "-c", "python -I x"], []),  # a script's own arguments
    ],
)
def test_which_interpreter_flags_are_read_from_a_command_line(words: List[str], flags: List[str]) -> None:
    assert python_flags(words) == flags


def test_the_webhook_and_the_agent_read_the_kill_switch_the_same_way() -> None:
    from pilotfish import bootstrap

    for value in c.DISABLED_VALUES:
        assert not bootstrap.enabled({"PILOTFISH_ENABLED": value})
    for value in ("true", "1", "yes", "on"):
        assert bootstrap.enabled({"PILOTFISH_ENABLED": value})


# --------------------------------------------------------------------------- writable state


def test_each_injected_container_gets_a_writable_state_directory() -> None:
    pod = make_pod([app("a"), app("b")], annotations={c.CONTAINERS_ANNOTATION: "a,b"})
    out = check_mutation(pod).pod
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["pilotfish-state"] == {"name": "pilotfish-state", "emptyDir": {"sizeLimit": "16Mi"}}
    for container in out["spec"]["containers"]:
        mount = next(m for m in container["volumeMounts"] if m["name"] == "pilotfish-state")
        assert mount == {"name": "pilotfish-state", "mountPath": "/pilotfish-state"}, "writable"
        assert env_of(container)["PILOTFISH_STATE_DIR"] == "/pilotfish-state", "exists at start"


def test_a_users_state_dir_wins() -> None:
    pod = make_pod([app(env=[{"name": "PILOTFISH_STATE_DIR", "value": "/data/pf"}])])
    assert env_of(first(check_mutation(pod).pod))["PILOTFISH_STATE_DIR"] == "/data/pf"


def test_a_user_volume_named_pilotfish_state_skips_the_pod() -> None:
    pod = make_pod(volumes=[{"name": "pilotfish-state", "emptyDir": {}}])
    mutation = check_mutation(pod)
    assert mutation.pod["spec"] == pod["spec"]
    assert "pilotfish-state" in status_of(mutation.pod)["reason"]


def test_a_user_mount_at_the_state_path_skips_that_container() -> None:
    pod = make_pod(
        [app(volumeMounts=[{"name": "data", "mountPath": "/pilotfish-state"}])],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    mutation = check_mutation(pod)
    assert mutation.injected == [] and "/pilotfish-state" in status_of(mutation.pod)["skipped"]["shop"]
