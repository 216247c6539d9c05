"""The injected agent tree: what every user process gets on its PYTHONPATH.

Spec (foundation issue): ``bootstrap/`` holds only ``sitecustomize.py``; ``lib/`` holds
only the package ``pilotfish``; the bootstrap parses on Python 2.7 and 3.6+ and is
silent everywhere; the app's own modules always win over ours.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from support.agent import AGENT_TREE, BOOTSTRAP, run_python
from support.interpreters import ALL_BOOTSTRAP_VERSIONS, matrix_versions, require_interpreter


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
    boot = sys.modules.get("pilotfish.bootstrap")
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
    code = "import sys; boot = sys.modules.get('pilotfish.bootstrap'); print(bool(boot and boot.loaded))"
    on = run_python(python, ["-c", code])
    off = run_python(python, ["-c", code], env={"PILOTFISH_ENABLED": "false"})
    assert on.stdout == "True\n"
    assert off.stdout == "False\n"


def test_a_foreign_pilotfish_package_makes_the_agent_stand_down(tmp_path: Path) -> None:
    python = require_interpreter("3.11")
    (tmp_path / "pilotfish").mkdir()
    (tmp_path / "pilotfish" / "__init__.py").write_text("OWNER = 'app'\n")
    code = "import pilotfish, sys; print(pilotfish.OWNER, 'pilotfish.bootstrap' in sys.modules)"
    result = run_python(python, ["-c", code], pythonpath=[str(tmp_path)])
    assert (result.returncode, result.stdout, result.stderr) == (0, "app False\n", "")
