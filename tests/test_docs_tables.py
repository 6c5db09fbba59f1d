"""Every Markdown table in the project's documents has as many cells in each row as its header:
the README's results tables grow a column per measured variant, and a row edited by hand can
silently shift its numbers under the wrong heading (it happened once, in the LoRA critic table)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DELIMITER = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")


def cells(line: str) -> int:
    """Cells of a table row; a pipe inside backticks or escaped as `\\|` is text, not a border."""
    text = re.sub(r"`[^`]*`", "", line).replace("\\|", "")
    return text.strip().strip("|").count("|") + 1


def misshapen_rows(text: str) -> list[tuple[int, int, int]]:
    """(line number, header cells, row cells) of each table row whose width is not its
    header's. A table is a `|` line followed by a delimiter line, then its `|` rows."""
    lines = text.splitlines()
    bad = []
    index = 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and DELIMITER.match(lines[index + 1].strip()):
            width = cells(lines[index])
            row = index + 1
            while row < len(lines) and lines[row].startswith("|"):
                if cells(lines[row]) != width:
                    bad.append((row + 1, width, cells(lines[row])))
                row += 1
            index = row
        else:
            index += 1
    return bad


def tracked_documents() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def test_a_row_with_an_extra_cell_is_found() -> None:
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n| 1 | `x|y` | 3 |\n| 1 | 2 \\| 3 |\n"
    assert misshapen_rows(table) == [(4, 2, 3)]


def test_every_table_row_is_as_wide_as_its_header() -> None:
    documents = tracked_documents()
    assert any(path.name == "README.md" for path in documents)
    bad = {
        str(path.relative_to(ROOT)): rows
        for path in documents
        if (rows := misshapen_rows(path.read_text(encoding="utf-8")))
    }
    assert bad == {}
