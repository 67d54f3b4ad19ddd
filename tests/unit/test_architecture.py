"""Architecture rules: the domain depends on nothing but the standard library."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_top_level_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def test_domain_imports_only_the_standard_library_and_itself():
    imports = imported_top_level_modules("domain")
    assert imports, "the scan found no imports at all: is the path right?"
    foreign = {
        module: files
        for module, files in imports.items()
        if module not in sys.stdlib_module_names and module not in ("domain", "__future__")
    }
    assert foreign == {}, f"domain/ must be stdlib-only, found {foreign}"


def test_the_scan_would_catch_a_third_party_import(tmp_path, monkeypatch):
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "bad.py").write_text("import pydantic\nfrom fastapi import FastAPI\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert set(imported_top_level_modules("domain")) == {"pydantic", "fastapi"}


def test_workflows_never_import_io_libraries_directly():
    io_modules = {"asyncpg", "httpx", "requests", "alpaca", "polygon", "fastapi", "socket"}
    offending = set(imported_top_level_modules("workflows")) & io_modules
    assert offending == set()
