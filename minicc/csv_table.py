"""A table as CSV text: the plain-file format of the DVC plot data the stages write.

pandas writes the CSV; this module only fixes, in one place, the choices every plot file
shares: no index column, and "\\n" line ends on every platform (pandas would use the
platform's), so a plot file hashes the same wherever it is built.
"""

import pandas as pd


def csv_text(table: pd.DataFrame) -> str:
    """CSV with the columns as header; an empty table is refused (a plot needs rows)."""
    if table.empty:
        raise ValueError("a CSV table needs at least one row")
    return table.to_csv(index=False, lineterminator="\n")
