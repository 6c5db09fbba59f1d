"""Rows of dicts as CSV text: the plain-file format of the DVC plot data the stages write."""

import csv
import io
from collections.abc import Mapping, Sequence


def csv_text(rows: Sequence[Mapping[str, object]]) -> str:
    """CSV with a header taken from the first row's keys; "\\n" line ends on every platform."""
    if not rows:
        raise ValueError("a CSV table needs at least one row")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
