"""Curate samples from the critiques by `select.policy` (best, margin or diverse).

    python stages/select_samples.py --critiques data/critiques.jsonl \
        --revisions data/revisions.jsonl --revision-critiques data/revision_critiques.jsonl \
        --out data/selected.jsonl --pairs-out data/preference_pairs.jsonl

Candidates and their revisions compete alike (see minicc/selection.py). Every policy writes the
same flat schema; for `best` the pairs file (TRL DPO format) holds only revised > original pairs.
Degenerate and off-topic replies are never chosen, nor (with `select.refusal_by_category`) a
reply that does not refuse a harmful prompt or refuses a harmless one; the output line counts the
prompts left without a chosen reply, per category. The off-topic detector's embedding model
(minicc/off_topic.py) runs on `models.device` in `models.dtype`.
"""

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.errors import UserError
from minicc.jsonl import atomic_write_files, read_numbered_records, read_records, records_text
from minicc.off_topic import OffTopicDetector
from minicc.params import load_params
from minicc.records import Critique, Revision
from minicc.selection import imitable, off_topic_ids, select, unchosen_prompts


def read_revisions(
    revisions: Path | None, critiques: Path | None
) -> tuple[dict[str, str], list[Critique]]:
    """Each revision's original id by revision id, and the revisions' critiques."""
    if revisions is None or critiques is None:
        if revisions is not None or critiques is not None:
            raise UserError("give --revisions and --revision-critiques together, or neither")
        return {}, []
    origins = {r.candidate_id: r.original_id for r in read_records(revisions, Revision)}
    numbered = read_numbered_records(critiques, Critique)
    for number, critique in numbered:
        if critique.candidate_id not in origins:
            raise UserError(
                f"{critiques}:{number}: candidate_id {critique.candidate_id!r} is not a "
                f"revision in {revisions}; re-run the critique of the revisions"
            )
    return origins, [critique for _, critique in numbered]


def main(
    critiques: Annotated[Path, typer.Option(help="Critiques written by the critique stage.")],
    out: Annotated[Path, typer.Option(help="Where to write the selected samples (JSONL).")],
    pairs_out: Annotated[Path, typer.Option(help="Where to write preference pairs (JSONL).")],
    revisions: Annotated[
        Path | None, typer.Option(help="Revisions written by the revise stage.")
    ] = None,
    revision_critiques: Annotated[
        Path | None, typer.Option(help="The critiques of those revisions (give both or neither).")
    ] = None,
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("select"):
        params = load_params(params_file)
        rows = read_records(critiques, Critique)
        origins, revised = read_revisions(revisions, revision_critiques)
        off_topic = off_topic_ids(rows + revised, OffTopicDetector.open(params.models))
        selected, pairs = select(rows + revised, params.select, origins, off_topic)
        degenerate = sum(c.scored and not imitable(c) for c in rows + revised)
        atomic_write_files({out: records_text(selected), pairs_out: records_text(pairs)})
        roles = Counter(s.role for s in selected)
        chosen_revisions = sum(s.role == "chosen" and s.revision_of is not None for s in selected)
        unchosen = unchosen_prompts(rows + revised, selected)
        per_category = ", ".join(f"{n} {c}" for c, n in sorted(unchosen.items())) or "none"
        print(
            f"select ({params.select.policy}): {roles['chosen']} chosen ({chosen_revisions} "
            f"revisions), {roles['rejected']} rejected from "
            f"{len({s.prompt_id for s in selected})} prompts, {len(pairs)} pairs; "
            f"{degenerate} degenerate and {len(off_topic)} off-topic replies never chosen; "
            f"no reply chosen for {sum(unchosen.values())} prompts "
            f"({per_category}) "
            f"-> {out}, {pairs_out}"
        )


if __name__ == "__main__":
    typer.run(main)
