"""docs/reference.md is the user contract on one page: it must name everything the code reads.

A setting added to the agent's field table, a name added to the webhook's contract module,
or a route added to the status server without a line in the reference fails here. Cheap
text checks, no process started.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

from pilotfish import settings, status_server
from pilotfish_webhook.admission import contract

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _table_rows_naming(name: str) -> List[str]:
    return [line for line in REFERENCE.splitlines() if line.startswith("|") and "`%s`" % name in line]


def test_every_agent_setting_is_in_the_reference_with_its_default() -> None:
    missing = [field.env for field in settings.FIELDS if not _table_rows_naming(field.env)]
    assert not missing, "settings missing from docs/reference.md: %s" % missing
    wrong: Dict[str, str] = {}
    for field in settings.FIELDS:
        default = field.default
        if isinstance(default, bool):
            shown = "`%s`" % str(default).lower()
        elif isinstance(default, tuple):
            shown = "`%s`" % ",".join(default) if default else "(empty)"
        elif isinstance(default, float):
            shown = "`%g`" % default
        elif default == "":
            shown = "(empty)"
        else:
            shown = "`%s`" % default
        if not any(shown in row for row in _table_rows_naming(field.env)):
            wrong[field.env] = shown
    assert not wrong, "default not shown in docs/reference.md (variable: expected): %s" % wrong


def test_every_contract_name_of_the_webhook_is_in_the_reference() -> None:
    names = {
        key: value
        for key, value in vars(contract).items()
        if key.isupper()
        and isinstance(value, str)
        and (key.startswith("ENV_") or key.endswith("_LABEL") or key.endswith("_ANNOTATION"))
        and key != "KUBECTL_DEFAULT_CONTAINER"  # Kubernetes' own name, not ours
    }
    assert names, "the contract module changed shape: update this test"
    missing = sorted(value for value in names.values() if "`%s" % value not in REFERENCE)
    assert not missing, "names missing from docs/reference.md: %s" % missing
    assert str(contract.STATUS_PORT) in REFERENCE


def test_every_status_server_route_is_in_the_reference() -> None:
    missing = sorted(path for path in status_server.StatusHandler.ROUTES if "`%s" % path not in REFERENCE)
    assert not missing, "status routes missing from docs/reference.md: %s" % missing


def test_every_pilotfish_variable_the_code_reads_is_in_the_reference() -> None:
    """Also the ones read outside the field table (the bootstrap, the webhook server)."""
    sources = [*(ROOT / "agent").rglob("*.py"), *(ROOT / "webhook").rglob("*.py")]
    seen = set()
    for path in sources:
        if "_vendor" in path.parts:
            continue
        seen.update(re.findall(r"\bPILOTFISH_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    missing = sorted(name for name in seen if "`%s`" % name not in REFERENCE)
    assert not missing, "variables read by the code but missing from docs/reference.md: %s" % missing
