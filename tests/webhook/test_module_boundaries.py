"""The cluster side's layout rules (docs/internals.md), checked on the source.

- ``kube.py`` is the only module that imports the ``kubernetes`` client: every API call the
  server makes (and so the RBAC it needs) is listed in one file;
- no module imports another module's private (``_``) names;
- starting ``serve`` outside a cluster does not load the client (it is imported on first use).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pilotfish_webhook

PACKAGE = Path(pilotfish_webhook.__file__).parent


def imports() -> Iterator[Tuple[str, str, str]]:
    """(module file, imported module, imported name or '') for every import in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield relative, alias.name, ""
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    yield relative, node.module, alias.name


def test_only_kube_py_imports_the_kubernetes_client() -> None:
    importers = {
        module
        for module, imported, _ in imports()
        if imported == "kubernetes" or imported.startswith("kubernetes.")
    }
    assert importers == {"kube.py"}


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        (module, imported, name)
        for module, imported, name in imports()
        if imported.startswith("pilotfish_webhook") and name.startswith("_") and name != "__version__"
    ]
    assert private == []


def test_the_server_module_loads_without_the_kubernetes_client() -> None:
    code = "import sys, pilotfish_webhook.cli; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
