"""The packages import each other only as docs/architecture.md's layout table allows."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE_HEADING = "## Packages and what they may import"


def allowed_imports() -> dict[str, set[str]]:
    """The table, read as data: ``nothing of ours``, ``everything``, ``everything above but …`` or
    the packages named."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = text.split(TABLE_HEADING, 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    allowed: dict[str, set[str]] = {}
    order: list[str] = []
    for row in rows:
        _, packages, may, _ = (cell.strip() for cell in row.split("|"))
        names = re.findall(r"`(\w+)`", packages)
        named = set(re.findall(r"`(\w+)`", may))
        if may.startswith("nothing"):
            rule: set[str] | None = set()
        elif may.startswith("everything above but"):
            rule = set(order) - named
        elif may.startswith("everything"):
            rule = None  # resolved below, once every package is known
        else:
            rule = named
        for name in names:
            allowed[name] = rule  # type: ignore[assignment]
        order.extend(names)
    return {name: set(order) - {name} if rule is None else rule for name, rule in allowed.items()}


def imported_packages(package: str, ours: set[str]) -> dict[str, set[str]]:
    """Which of our packages each module of ``package`` imports (absolute imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in ours and top != package:
                    found.setdefault(str(path.relative_to(ROOT)), set()).add(top)
    return found


def test_every_package_imports_only_what_the_layout_table_allows():
    allowed = allowed_imports()
    assert {"core", "ingest", "diagnostics", "alarms", "tickets", "api", "ironsight"} <= allowed.keys()
    ours = set(allowed)
    breaches = [f"{module} imports {sorted(imports - allowed[package])}"
                for package in sorted(ours)
                for module, imports in imported_packages(package, ours).items()
                if imports - allowed[package]]
    assert breaches == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    package = tmp_path / "core"
    package.mkdir()
    (package / "leak.py").write_text("from api.app import create_app\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imported_packages("core", {"core", "api"}) == {"core/leak.py": {"api"}}
