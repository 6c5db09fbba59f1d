"""Score every candidate 1-5 against the constitution with the critic model.

    python stages/critique.py --candidates data/candidates.jsonl \
        --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --out data/critiques.jsonl

The score is the expected digit under the critic's next-token distribution; candidates that
cannot be scored are kept and marked unscored. Crash-safe like generate.
"""

from pathlib import Path

import typer

from minicc.cli import stage_errors
from minicc.constitution import load_constitution
from minicc.critic import Critic, critique_candidates, critique_inputs
from minicc.jsonl import read_records, write_records
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import Candidate
from minicc.resume import resumable
from minicc.seeding import seed_everything


def main(
    candidates: Path = typer.Option(..., help="Candidates written by the generate stage."),
    principles: Path = typer.Option(..., help="Constitution principles (YAML)."),
    instruct_template: Path = typer.Option(..., help="Judge template for critique.style=instruct."),
    base_template: Path = typer.Option(..., help="Judge template for critique.style=base."),
    out: Path = typer.Option(..., help="Where to write the critiques (JSONL)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    with stage_errors("critique"):
        params = load_params(params_file)
        style = params.critique.style
        template = instruct_template if style == "instruct" else base_template
        constitution = load_constitution(principles, template, style)
        rows = read_records(candidates, Candidate)
        seed_everything(params.seed)
        critic = Critic(
            load_model(params.models.critic, params.models), constitution, params.critique
        )
        inputs = critique_inputs(rows, params.critique, critic.loaded.model_id, constitution)
        with resumable("critique", inputs) as log:
            critiques, count = critique_candidates(critic, rows, params.critique.batch_size, log)
            write_records(out, critiques)
        scored = [c for c in critiques if c.scored]
        safe = sum(bool(c.safe) for c in scored)
        print(
            f"critique: {len(scored)}/{len(critiques)} scored ({len(critiques) - len(scored)} "
            f"unscored), {safe} safe, by {critic.loaded.model_id} ({style}) -> {out} "
            f"[{count.batches_run} batches run, {count.batches_resumed} resumed]"
        )


if __name__ == "__main__":
    typer.run(main)
