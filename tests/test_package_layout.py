"""minicc/__init__.py's docstring lists every module of the package under one group, so the flat
package reads as layers; this keeps the list true when a module is added, renamed or removed."""

import ast
import re
from pathlib import Path

import minicc

PACKAGE = Path(minicc.__file__).parent
GROUPS = ("core/io", "models", "critic", "data", "training", "reporting")
LINE = re.compile(r"^    (\w+): \S")
"""A module's line under its group: four spaces, the module name, a colon, what it does."""


def layout() -> dict[str, list[str]]:
    """Modules by group, from the docstring: a group is an unindented line named in GROUPS."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8")))
    assert doc is not None
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        if line in GROUPS:
            current = groups.setdefault(line, [])
        elif (match := LINE.match(line)) is not None:
            assert current is not None, f"module line before any group: {line!r}"
            current.append(match.group(1))
    return groups


def test_the_docstring_has_every_group_in_order() -> None:
    assert tuple(layout()) == GROUPS


def test_every_module_is_listed_once_and_every_listed_module_exists() -> None:
    listed = [module for modules in layout().values() for module in modules]
    on_disk = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed)), "a module is listed twice"
