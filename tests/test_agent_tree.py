"""The injected agent tree: what every user process gets on its PYTHONPATH.

``bootstrap/`` holds only ``sitecustomize.py``; ``lib/`` holds only the package directory
``pilotfish``, which the bootstrap loads under the private name ``_pilotfish_agent`` (``lib``
is never on ``sys.path``); the bootstrap parses on Python 2.7 and 3.6+ and is silent
everywhere; the app's own modules, its own ``pilotfish`` included, always win over ours.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from support import servers
from support.agent import AGENT_TREE, BOOTSTRAP, run_python
from support.interpreters import (
    ALL_BOOTSTRAP_VERSIONS,
    matrix_versions,
    require_app_python,
    require_interpreter,
)


def test_tree_exposes_only_sitecustomize_and_pilotfish() -> None:
    assert sorted(p.name for p in BOOTSTRAP.iterdir() if p.name != "__pycache__") == ["sitecustomize.py"]
    cache = BOOTSTRAP / "__pycache__"
    assert not cache.exists() or {p.suffix for p in cache.iterdir()} <= {".pyc"}
    lib = AGENT_TREE / "lib"
    assert sorted(p.name for p in lib.iterdir() if p.name != "__pycache__") == ["pilotfish"]


def test_vendored_wrapt_is_pure_python_only() -> None:
    vendored = AGENT_TREE / "lib" / "pilotfish" / "_vendor" / "wrapt"
    assert (vendored / "wrappers.py").exists()
    assert not [p for p in vendored.rglob("*") if p.suffix in (".so", ".c", ".pyd")]


def test_bootstrap_is_python2_syntax_free_of_py3_only_constructs() -> None:
    source = (BOOTSTRAP / "sitecustomize.py").read_text()
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)], "no f-strings"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)], "no annotations"


# Python 2 writes sitecustomize.pyc beside the source; in a pod the mount is read-only,
# here the tests run as root, so keep 2.7 from leaving byte-code in the agent tree.
_NO_PY2_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("minor", ALL_BOOTSTRAP_VERSIONS)
def test_every_interpreter_prints_exactly_its_own_output(minor: str) -> None:
    python = require_interpreter(minor)
    code = "print 1" if minor.startswith("2.") else "print(1)"
    result = run_python(python, ["-c", code], env=_NO_PY2_BYTECODE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")


@pytest.mark.parametrize("minor", ALL_BOOTSTRAP_VERSIONS)
def test_old_or_new_interpreter_still_runs_the_apps_sitecustomize(minor: str, tmp_path: Path) -> None:
    python = require_interpreter(minor)
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.app_site_ran = True\n")
    code = "import sys; print(getattr(sys, 'app_site_ran', False))"
    result = run_python(python, ["-c", code], pythonpath=[str(tmp_path)], env=_NO_PY2_BYTECODE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "True\n", "")


def _app_with_lookalikes(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "wrapt").mkdir(parents=True)
    (app / "agent.py").write_text("NAME = 'the app agent'\n")
    (app / "wrapt" / "__init__.py").write_text("__version__ = '0.0.1-app'\n")
    (app / "sitecustomize.py").write_text("import os\nos.environ['APP_SITECUSTOMIZE'] = 'ran'\n")
    return app


PROBE = textwrap.dedent(
    """
    import os, sys
    import agent, wrapt
    boot = sys.modules.get("_pilotfish_agent.bootstrap")
    print(agent.NAME, wrapt.__version__, os.environ.get("APP_SITECUSTOMIZE"),
          bool(boot and boot.loaded))
    """
)


@pytest.mark.parametrize("minor", matrix_versions())
def test_app_modules_named_like_ours_win_and_the_agent_still_loads(minor: str, tmp_path: Path) -> None:
    python = require_interpreter(minor)
    app = _app_with_lookalikes(tmp_path)
    result = run_python(python, ["-c", PROBE], pythonpath=[str(app)], cwd=app)
    assert result.stderr == ""
    assert result.stdout == "the app agent 0.0.1-app ran True\n"


def test_app_sitecustomize_errors_are_reported_as_without_the_agent(tmp_path: Path) -> None:
    python = require_interpreter("3.11")
    (tmp_path / "sitecustomize.py").write_text("raise RuntimeError('app site broke')\n")
    args = ["-c", "print('app ran')"]
    bare = run_python(python, args, agent=False, pythonpath=[str(tmp_path)])
    ours = run_python(python, args, pythonpath=[str(tmp_path)])
    assert (ours.returncode, ours.stdout) == (bare.returncode, bare.stdout) == (0, "app ran\n")
    assert "Error in sitecustomize" in bare.stderr
    assert ours.stderr.splitlines()[0] == bare.stderr.splitlines()[0]


def test_kill_switch_keeps_the_agent_out(tmp_path: Path) -> None:
    python = require_interpreter("3.11")
    code = (
        "import sys; boot = sys.modules.get('_pilotfish_agent.bootstrap'); print(bool(boot and boot.loaded))"
    )
    on = run_python(python, ["-c", code])
    off = run_python(python, ["-c", code], env={"PILOTFISH_ENABLED": "false"})
    assert on.stdout == "True\n"
    assert off.stdout == "False\n"


# -- the app's own `pilotfish` ------------------------------------------------------------
#
# Python puts the script's directory (python app.py), the cwd (python -m) or gunicorn's
# --chdir on sys.path only after site has run sitecustomize; whatever the agent occupies
# then would shadow the app's module. The agent occupies no import name but its own
# private one, so the app's `pilotfish` is the one it imports, and the agent still runs.

OWN_MODULE = "import sys\nOWNER = 'app'\n"
REPORT = (
    "import pilotfish, sys\n"
    "boot = sys.modules.get('_pilotfish_agent.bootstrap')\n"
    "print(pilotfish.OWNER, bool(boot and boot.loaded))\n"
)


@pytest.mark.parametrize("minor", matrix_versions())
def test_the_apps_own_pilotfish_beside_its_script_is_the_one_imported(minor: str, tmp_path: Path) -> None:
    python = require_interpreter(minor)
    (tmp_path / "pilotfish.py").write_text(OWN_MODULE)
    (tmp_path / "main.py").write_text(REPORT)
    result = run_python(python, [str(tmp_path / "main.py")], cwd=tmp_path.parent)
    assert (result.returncode, result.stdout, result.stderr) == (0, "app True\n", "")


@pytest.mark.parametrize("minor", matrix_versions())
def test_the_apps_own_pilotfish_package_in_the_cwd_of_python_m_is_the_one_imported(
    minor: str, tmp_path: Path
) -> None:
    python = require_interpreter(minor)
    (tmp_path / "pilotfish").mkdir()
    (tmp_path / "pilotfish" / "__init__.py").write_text(OWN_MODULE)
    (tmp_path / "service.py").write_text(REPORT)
    result = run_python(python, ["-m", "service"], cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "app True\n", "")


GUNICORN_APP = (
    "import sys\n"
    "import pilotfish\n"
    "def app(environ, start_response):\n"
    "    boot = sys.modules.get('_pilotfish_agent.bootstrap')\n"
    "    body = ('%s %s' % (pilotfish.OWNER, bool(boot and boot.loaded))).encode()\n"
    "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
    "    return [body]\n"
)


def test_the_apps_own_pilotfish_in_gunicorns_chdir_is_the_one_imported(tmp_path: Path) -> None:
    python = require_app_python("3.11")
    (tmp_path / "pilotfish.py").write_text(OWN_MODULE)
    (tmp_path / "own_module_app.py").write_text(GUNICORN_APP)
    with servers.RunningServer(
        "gunicorn-sync", python, app="own_module_app:app", workers=1, extra_args=["--chdir", str(tmp_path)]
    ) as server:
        answer = server.get("/")
        log = server.output()
    assert (answer.status, answer.body) == (200, b"app True"), log


def test_without_a_pilotfish_of_its_own_the_app_gets_import_error_as_without_the_agent() -> None:
    python = require_interpreter("3.11")
    code = (
        "import sys\ntry:\n    import pilotfish\nexcept ImportError as e:\n    print('ImportError', e.name)\n"
    )
    ours = run_python(python, ["-c", code])
    bare = run_python(python, ["-c", code], agent=False)
    assert ours.stdout == bare.stdout == "ImportError pilotfish\n"
    assert "_pilotfish_agent" in run_python(python, ["-c", "import sys; print(sorted(sys.modules))"]).stdout


def test_the_agent_lib_is_not_on_sys_path() -> None:
    python = require_interpreter("3.11")
    result = run_python(python, ["-c", "import sys; print([p for p in sys.path if 'agent-tree' in p])"])
    assert result.stdout == "[%r]\n" % str(BOOTSTRAP)
