"""The agent's modules import in one direction only: no cycle, not even through a lazy import.

Every ``import`` and ``from ... import`` of every module of ``agent/pilotfish`` counts,
at any depth (inside functions, methods, ``if TYPE_CHECKING:`` blocks and ``try:``),
with relative imports resolved against the importing module. A module that must call
a module above it takes a callback (``runtime.on_wake``, a hook it is handed) instead.
The vendored packages are not ours and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

AGENT = Path(__file__).resolve().parent.parent / "agent" / "pilotfish"
PACKAGE = "pilotfish"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(AGENT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def agent_modules() -> Dict[str, Path]:
    modules = {}
    for path in sorted(AGENT.rglob("*.py")):
        if "_vendor" in path.relative_to(AGENT).parts:
            continue
        modules[_module_name(path)] = path
    return modules


def _resolve(importer: str, is_package: bool, level: int, module: Optional[str]) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _target(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """``name`` or its nearest enclosing package among the agent's modules."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: Dict[str, Path]) -> Dict[str, int]:
    """Agent modules ``name`` imports (at any depth) -> line of the first such import."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: Dict[str, int] = {}

    def add(candidate: str, line: int) -> None:
        target = _target(candidate, modules)
        if target is not None and target != name and target not in found:
            found[target] = line

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve(name, is_package, node.level, node.module)
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                base = node.module
            else:
                continue
            for alias in node.names:
                # ``from . import x``: x may be a submodule; else the import is of ``base`` itself.
                submodule = base + "." + alias.name if base else alias.name
                add(submodule if submodule in modules else base, node.lineno)
    return found


def import_graph() -> Dict[str, Dict[str, int]]:
    modules = agent_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """One cycle through each strongly connected component of more than one module."""
    return [_one_cycle(graph, set(component)) for component in tangles(graph)]


def tangles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """Every strongly connected component with more than one module (sorted names)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []
    counter = [0]

    def connect(node: str) -> None:  # Tarjan, recursive: the graph is a few dozen modules
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _one_cycle(graph: Dict[str, Dict[str, int]], component: Set[str]) -> List[str]:
    """A shortest cycle through the component's first module, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return paths[node] + [start]
            if nxt in component and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(component)


def describe(graph: Dict[str, Dict[str, int]], cycle: List[str]) -> str:
    steps = []
    for here, there in zip(cycle, cycle[1:]):
        steps.append("%s -> %s (%s.py line %d)" % (here, there, here.replace(".", "/"), graph[here][there]))
    return "import cycle: " + " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pilotfish"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from .. import a\n")
    modules = {_module_name_in(tmp_path, p): p for p in package.rglob("*.py")}
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["pilotfish.a"] == {"pilotfish.sub.b": 2}
    assert graph["pilotfish.sub.b"] == {"pilotfish.a": 1}
    assert find_cycles(graph) == [["pilotfish.a", "pilotfish.sub.b", "pilotfish.a"]]


def _module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_the_agent_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20, "the scan found too few modules: %s" % sorted(graph)
    problems = [
        describe(graph, _one_cycle(graph, set(component)))
        + "\n    (modules caught in this tangle: %s)" % ", ".join(component)
        for component in tangles(graph)
    ]
    assert not problems, "\n".join(problems)


def _reachable(graph: Dict[str, Dict[str, int]], start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_owner_start_up_is_wired_downwards() -> None:
    """runtime -> owner -> {lifecycle, central, offline}: the lower modules reach none above them."""
    graph = import_graph()
    central = {name for name in graph if name.startswith(PACKAGE + ".central")}
    above_the_lifecycle = {PACKAGE + ".runtime", PACKAGE + ".owner", PACKAGE + ".offline"} | central
    assert not _reachable(graph, PACKAGE + ".lifecycle") & above_the_lifecycle
    for name in central:
        reached = _reachable(graph, name)
        assert not reached & {PACKAGE + m for m in (".runtime", ".owner", ".lifecycle", ".offline")}, name
    assert not _reachable(graph, PACKAGE + ".offline") & (
        {PACKAGE + ".runtime", PACKAGE + ".owner"} | central
    )
    assert PACKAGE + ".owner" in graph[PACKAGE + ".runtime"]
    assert {PACKAGE + ".lifecycle", PACKAGE + ".offline", PACKAGE + ".central.config"} <= set(
        graph[PACKAGE + ".owner"]
    )


def private_uses(name: str, path: Path, modules: Dict[str, Path]) -> List[str]:
    """``module._name`` reads and ``from .module import _name`` imports of another agent module.

    What another module needs has a public name that says what it is; a leading underscore
    means "only this module relies on it", so it can change without a look elsewhere.
    """
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    aliases: Dict[str, str] = {}  # local name -> agent module it is bound to
    found: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                submodule = base + "." + alias.name if base else alias.name
                if submodule in modules:
                    aliases[alias.asname or alias.name] = submodule
                elif (
                    alias.name.startswith("_")
                    and not alias.name.startswith("__")
                    and base in modules
                    and base != name
                ):
                    found.append("line %d: from %s import %s" % (node.lineno, base, alias.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != name
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append("line %d: %s.%s" % (node.lineno, aliases[node.value.id], node.attr))
    return found


def test_no_agent_module_reaches_into_another_modules_private_names() -> None:
    modules = agent_modules()
    problems = [
        "%s %s" % (path.relative_to(AGENT.parent), use)
        for name, path in modules.items()
        for use in private_uses(name, path, modules)
    ]
    assert not problems, "\n".join(problems)


def test_the_private_name_scan_sees_aliases_and_from_imports(tmp_path: Path) -> None:
    package = tmp_path / "pilotfish"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("_hidden = 1\nshown = 2\n")
    (package / "b.py").write_text(
        "from . import a as _a\nfrom .a import _hidden, shown\n\ndef f():\n    return _a._hidden + _a.shown\n"
    )
    modules = {_module_name_in(tmp_path, p): p for p in package.rglob("*.py")}
    assert private_uses("pilotfish.b", modules["pilotfish.b"], modules) == [
        "line 2: from pilotfish.a import _hidden",
        "line 5: pilotfish.a._hidden",
    ]
