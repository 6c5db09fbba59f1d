"""Reading the public CSV data sets that the dataset builders in tools/ draw from."""

import csv
from pathlib import Path

from minicc.errors import UserError


def read_csv(path: Path, columns: set[str]) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts, after checking it has the columns the builder needs."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; pass --shared the folder SOURCES.md describes")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = columns - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: missing column(s) {sorted(missing)}, needs {sorted(columns)}")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path}: no data rows after the header")
    return rows
