"""Every third-party module the project imports comes from a dependency it declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCANNED = ("app", "installer", "scripts", "benchmarks", "tests")
# Our own top-level names (packages and scripts imported by their folder's path).
OWN = {"llamarunner", "tests", "benchmarks", "proxy_overhead", "notices", "build_bundle",
       "selftest"}
# Installed by a declared dependency and only ever used together with it.
COMES_WITH = {"shiboken6": "pyside6-essentials", "av": "faster-whisper"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {_normal(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}


def imported_top_levels() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ".venv" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    wanted = declared()
    missing = []
    for module, where in sorted(imported_top_levels().items()):
        if module in sys.stdlib_module_names or module in OWN or module == "__future__":
            continue
        if module in COMES_WITH:
            ok = COMES_WITH[module] in wanted
        else:
            ok = any(_normal(dist) in wanted for dist in providers.get(module, []))
        if not ok:
            missing.append(f"{module} (imported by {where})")
    assert missing == []
