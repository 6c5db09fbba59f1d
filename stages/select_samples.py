"""Curate samples from the critiques by `select.policy` (best, margin or diverse).

    python stages/select_samples.py --critiques data/critiques.jsonl \
        --out data/selected.jsonl --pairs-out data/preference_pairs.jsonl

Every policy writes the same flat schema; the pairs file (TRL DPO format) is empty for `best`.
"""

from collections import Counter
from pathlib import Path

import typer

from minicc.cli import stage_errors
from minicc.jsonl import atomic_write_files, read_records, records_text
from minicc.params import load_params
from minicc.records import Critique
from minicc.selection import select


def main(
    critiques: Path = typer.Option(..., help="Critiques written by the critique stage."),
    out: Path = typer.Option(..., help="Where to write the selected samples (JSONL)."),
    pairs_out: Path = typer.Option(..., help="Where to write preference pairs (JSONL)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    with stage_errors("select"):
        params = load_params(params_file)
        rows = read_records(critiques, Critique)
        selected, pairs = select(rows, params.select)
        atomic_write_files({out: records_text(selected), pairs_out: records_text(pairs)})
        roles = Counter(s.role for s in selected)
        print(
            f"select ({params.select.policy}): {roles['chosen']} chosen, {roles['rejected']} "
            f"rejected from {len({s.prompt_id for s in selected})} prompts, {len(pairs)} pairs "
            f"-> {out}, {pairs_out}"
        )


if __name__ == "__main__":
    typer.run(main)
