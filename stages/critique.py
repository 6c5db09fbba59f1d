"""Score every candidate 1-5 against the constitution with the critic model.

    python stages/critique.py --candidates data/candidates.jsonl \
        --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --trained-critic models/critic \
        --out data/critiques.jsonl

With `critique.method: judge` the score is the expected digit under the critic's next-token
distribution; with `probe` it comes from the heads train_critic fitted on the critic's hidden
states (see minicc/probe.py). Candidates that cannot be scored are kept and marked unscored.
Revisions (data/revisions.jsonl) are critiqued by the same command, as candidates.
Crash-safe like generate.
"""

from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import (
    PARAMS_FILE,
    BaseTemplateFile,
    InstructTemplateFile,
    ParamsFile,
    PrinciplesFile,
    TrainedCriticDir,
    stage_errors,
)
from minicc.critic import CriticFiles, critic_setup, open_critic, resumable_critiques
from minicc.jsonl import write_records
from minicc.params import load_params
from minicc.records import load_candidates
from minicc.seeding import seed_everything


def main(
    candidates: Annotated[Path, typer.Option(help="Candidates (generate) or revisions (revise).")],
    principles: PrinciplesFile,
    instruct_template: InstructTemplateFile,
    base_template: BaseTemplateFile,
    trained_critic: TrainedCriticDir,
    out: Annotated[Path, typer.Option(help="Where to write the critiques (JSONL).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("critique"):
        params = load_params(params_file)
        files = CriticFiles(principles, instruct_template, base_template, trained_critic)
        setup = critic_setup(params, files, params.critique.method)
        rows = load_candidates(candidates)
        seed_everything(params.critic_seed)
        critic = open_critic(params, setup)
        batch_size = params.critique.batch_size
        with resumable_critiques("critique", critic, rows, batch_size) as (critiques, count):
            write_records(out, critiques)
        scored = [c for c in critiques if c.scored]
        safe = sum(bool(c.safe) for c in scored)
        print(
            f"critique: {len(scored)}/{len(critiques)} scored ({len(critiques) - len(scored)} "
            f"unscored), {safe} safe, by {critic.critic_id} ({params.critique.method}) -> {out} "
            f"[{count.batches_run} batches run, {count.batches_resumed} resumed]"
        )


if __name__ == "__main__":
    typer.run(main)
