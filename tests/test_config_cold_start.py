"""Central config on the starts where it matters: a read-only root, and a late config service.

Spec: with ``readOnlyRootFilesystem`` and no writable temp dir, the agent still applies
the central policy (no cache means no cache, not no config), and caches it in
``PILOTFISH_STATE_DIR`` when that is writable. When the config service answers only
after the app listens (slow or busy during a rollout), the policy's
``delay_register_seconds`` still decides when the instance registers: the lifecycle
waits (bounded) for the first answer before it judges the delay.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator

import pytest
from support.config_server import ConfigServer, config_server
from support.interpreters import require_interpreter
from support.proxy import HeldProxy
from support.scripts import APPS, AgentScript
from support.wait import eventually

SCRIPT = APPS / "wake" / "listen_twice.py"

POLICIES = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata:
  name: shop
  namespace: demo
spec:
  selector:
    apps: [shop]
  lossless:
    delayRegisterSeconds: 4
    warmup:
      seconds: 45
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES)
    with config_server(tmp_path, policies) as running:
        yield running


def _env(url: str, ca: Path, **extra: str) -> Dict[str, str]:
    env = {
        "PILOTFISH_CONFIG_URL": url,
        "PILOTFISH_CONFIG_CA": str(ca),
        "PILOTFISH_APP": "shop",
        "PILOTFISH_POD_NAMESPACE": "demo",
        "PILOTFISH_POD_NAME": "shop-0",
    }
    env.update(extra)
    return env


# -- a read-only root file system ---------------------------------------------------------

READ_ONLY_TMP = (
    "mount --make-rprivate / && mount -o bind,ro /tmp /tmp && mount -o bind,ro /var/tmp /var/tmp "
    '&& cd /tmp && exec "$@"'
)


def _read_only_prefix() -> list:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (a mount namespace with a read-only /tmp)")
    probe = subprocess.run([unshare, "-m", "sh", "-c", READ_ONLY_TMP, "sh", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here: %s" % probe.stderr.decode(errors="replace"))
    return [unshare, "-m", "sh", "-c", READ_ONLY_TMP, "sh"]


def test_without_any_writable_temp_dir_the_central_policy_still_applies(
    server: ConfigServer, tmp_path: Path
) -> None:
    python = require_interpreter("3.11")
    prefix = _read_only_prefix()
    check = subprocess.run(
        [*prefix, python, "-c", "import tempfile; tempfile.gettempdir()"],
        capture_output=True,
        text=True,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert "No usable temporary directory" in check.stderr, "the namespace left a writable temp dir"
    env = _env(server.url, server.ca, TMPDIR=str(tmp_path))
    with AgentScript(python, SCRIPT, env=env, prefix=prefix) as app:
        app.line("listening")
        status = app.wait_status(lambda s: s.get("config_version") is not None)
        assert status["config"]["warmup_seconds"] == 45
        assert status["config_sources"]["warmup_seconds"] == "central"
        assert status["config_service"]["cache"] is None
        log = app.stderr()
    assert log.count("pilotfish: warning") == 1, log
    assert "no writable directory for the config cache" in log


def test_the_config_cache_goes_to_the_state_dir_when_the_root_is_read_only(
    server: ConfigServer, tmp_path: Path
) -> None:
    python = require_interpreter("3.11")
    prefix = _read_only_prefix()
    state = Path("/dev/shm") / ("pilotfish-test-state-%s" % uuid.uuid4().hex[:8])  # like an emptyDir
    state.mkdir()
    try:
        env = _env(server.url, server.ca, TMPDIR=str(tmp_path), PILOTFISH_STATE_DIR=str(state))
        with AgentScript(python, SCRIPT, env=env, prefix=prefix) as app:
            app.line("listening")
            status = app.wait_status(lambda s: s.get("config_version") is not None)
            assert status["config"]["warmup_seconds"] == 45
            cache = Path(status["config_service"]["cache"])
            assert cache.parent == state
            eventually(cache.exists, 10, "the cache file")
            assert "pilotfish: warning" not in app.stderr()
    finally:
        shutil.rmtree(state, ignore_errors=True)


# -- a config service that answers late ----------------------------------------------------


def test_registration_waits_for_the_policy_delay_when_the_config_arrives_after_the_app_listens(
    server: ConfigServer, tmp_path: Path
) -> None:
    python = require_interpreter("3.11")
    port = int(server.url.rsplit(":", 1)[1])
    with HeldProxy(("127.0.0.1", port)) as slow:
        url = "https://127.0.0.1:%d" % slow.port
        env = _env(url, server.ca, PILOTFISH_CACHE_DIR=str(tmp_path))
        with AgentScript(python, SCRIPT, env=env) as app:
            app.line("listening")
            app.wait_status(lambda s: s["lifecycle"]["state"] == "delaying")
            time.sleep(2.0)  # the service is busy: it answers 2 s after the app listened (the scenario)
            slow.release()
            status = app.wait_status(lambda s: s["lifecycle"]["state"] in ("registered", "ready"))
            entered = {t["state"]: t["at_epoch"] for t in status["lifecycle"]["transitions"]}
            assert status["config"]["delay_register_seconds"] == 4
            assert status["config_sources"]["delay_register_seconds"] == "central"
            waited = entered["registered"] - entered["delaying"]
            assert waited >= 4.0 - 0.05, "registered %.2fs after listening, before the policy's 4 s" % waited
            assert status["lifecycle"]["central_config_before_delay"].startswith("answered")
