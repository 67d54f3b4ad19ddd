"""Architecture rules, enforced: imports run one way, and no module imports itself in a loop.

    api, worker  ->  bootstrap  ->  workflows, activities  ->  contracts  ->  domain

`api` never imports `worker`; `activities` never import `workflows`; workflows reach an
activity only through its class (a typed reference, passed through the sandbox); `domain`
is the standard library only. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "contracts", "activities", "workflows", "bootstrap", "worker", "api")

# What each package may import from the project (besides itself and third-party code).
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "contracts": {"domain"},
    "activities": {"contracts", "domain"},
    "workflows": {"activities", "contracts", "domain"},
    "bootstrap": {"workflows", "activities", "contracts", "domain"},
    "api": {"bootstrap", "workflows", "activities", "contracts", "domain"},
    "worker": {"api", "bootstrap", "workflows", "activities", "contracts", "domain"},
}
# The activity modules a workflow may name (their classes, for typed activity calls).
ACTIVITY_CLASSES = {
    "activities.order_activities",
    "activities.operations_activities",
    "activities.strategy_activities",
    "activities.parent_activities",
    "activities.protection_activities",
    "activities.bracket_activities",
}
IO_LIBRARIES = {"asyncpg", "httpx", "requests", "alpaca", "polygon", "fastapi", "socket"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module `path` imports, absolute or relative, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from activities.store import ledger` imports the module activities.store.ledger
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def project_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (only names that are real modules)."""
    files = {
        module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }
    return {
        name: {m for m in imports_of(path, root) if m in files and m != name}
        for name, path in files.items()
    }


def third_party_of(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        for name in imports_of(path, root):
            top = name.split(".")[0]
            if top and top not in PACKAGES and top != "tests":
                found.setdefault(top, set()).add(path.name)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        layer = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other == layer:
                continue
            if other not in ALLOWED[layer]:
                wrong.append(f"{module} imports {target}")
            elif layer == "workflows" and other == "activities" and target not in ACTIVITY_CLASSES:
                wrong.append(f"{module} imports {target}: workflows name activity classes only")
    return sorted(wrong)


def test_imports_run_one_way_between_layers():
    graph = project_graph()
    assert len(graph) > 50, "the scan found too few modules: is the path right?"
    assert violations(graph) == []


def test_no_module_imports_itself_through_others():
    try:
        tuple(TopologicalSorter(project_graph()).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_domain_imports_only_the_standard_library_and_itself():
    foreign = {
        module: files
        for module, files in third_party_of("domain").items()
        if module not in sys.stdlib_module_names and module != "__future__"
    }
    assert foreign == {}, f"domain/ must be stdlib-only, found {foreign}"


def test_contracts_import_only_the_standard_library_and_the_domain():
    foreign = {
        module
        for module in third_party_of("contracts")
        if module not in sys.stdlib_module_names and module != "__future__"
    }
    assert foreign == set()


def test_workflows_never_import_io_libraries_directly():
    assert set(third_party_of("workflows")) & IO_LIBRARIES == set()


def test_nothing_shipped_imports_the_tests():
    graph_imports = {
        name
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for name in imports_of(path, ROOT)
    }
    assert not {name for name in graph_imports if name.split(".")[0] == "tests"}


# -- the checks above would catch what they are for ----------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_scan_catches_an_import_against_the_direction(tmp_path):
    write(
        tmp_path,
        {
            "api/__init__.py": "",
            "api/server.py": "def main():\n    from worker.main import run\n",
            "worker/__init__.py": "",
            "worker/main.py": "def run(): ...\n",
            "activities/__init__.py": "",
            "activities/store.py": "from ..workflows import order\n",
            "workflows/__init__.py": "",
            "workflows/order.py": "from activities import store\n",
        },
    )
    assert violations(project_graph(tmp_path)) == [
        "activities.store imports workflows",
        "activities.store imports workflows.order",
        "api.server imports worker.main",
        "workflows.order imports activities.store: workflows name activity classes only",
        "workflows.order imports activities: workflows name activity classes only",
    ]


def test_the_scan_catches_a_cycle_and_a_third_party_import_in_the_domain(tmp_path):
    write(
        tmp_path,
        {
            "domain/__init__.py": "",
            "domain/portfolio.py": "def f():\n    from domain.risk import check\n",
            "domain/risk.py": "from domain.portfolio import f\nimport pydantic\n",
        },
    )
    with pytest.raises(CycleError):
        tuple(TopologicalSorter(project_graph(tmp_path)).static_order())
    assert set(third_party_of("domain", tmp_path)) == {"pydantic"}
