"""Critique and revise the low-scored candidates against the constitution (the CAI supervised step).

    python stages/revise.py --critiques data/critiques.jsonl \
        --principles constitution/principles.yaml \
        --examples constitution/revision_examples.yaml --out data/revisions.jsonl

Every candidate the critic scored below `revise.threshold` gets `revise.num_revisions` chains of
`revise.rounds` revisions by `models.reviser` (null: the generator), each after the reviser's
own critique under a principle drawn from the seed (see minicc/revision.py). With
`revise.num_revisions: 0` the stage writes an empty file without loading a model. Crash-safe
like generate: finished batches survive and a rerun only does the missing ones.
"""

from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, PrinciplesFile, stage_errors
from minicc.constitution import load_revision_guide
from minicc.jsonl import read_records, write_records
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import Critique, Revision
from minicc.resume import resumable
from minicc.revision import revise, revision_inputs, revision_targets
from minicc.seeding import seed_everything


def main(
    critiques: Annotated[Path, typer.Option(help="Critiques of the candidates (critique stage).")],
    principles: PrinciplesFile,
    examples: Annotated[Path, typer.Option(help="Few-shot critique and revision examples (YAML).")],
    out: Annotated[Path, typer.Option(help="Where to write the revisions (JSONL).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("revise"):
        params = load_params(params_file)
        settings = params.revise
        rows = read_records(critiques, Critique)
        if settings.num_revisions == 0:
            write_records(out, list[Revision]())
            print(f"revise: off (revise.num_revisions is 0) -> empty {out}")
            return
        guide = load_revision_guide(principles, examples)
        targets = revision_targets(rows, settings.threshold)
        unscored = sum(not c.scored for c in rows)
        seed_everything(params.seed)
        loaded = load_model(params.models.reviser or params.models.generator, params.models)
        inputs = revision_inputs(targets, settings, params.seed, loaded.model_id, guide)
        with resumable("revise", inputs) as log:
            run = revise(loaded, guide, targets, settings, params.seed, log)
            write_records(out, run.revisions)
        print(
            f"revise: {len(run.revisions)} revisions of {len(targets)}/{len(rows)} candidates "
            f"scored below {settings.threshold} ({unscored} unscored skipped, "
            f"{run.dropped_empty} empty revisions dropped) by {loaded.model_id} -> {out} "
            f"[{run.count.batches_run} batches run, {run.count.batches_resumed} resumed]"
        )


if __name__ == "__main__":
    typer.run(main)
