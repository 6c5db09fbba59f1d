"""Generate candidate responses: `generate.num_candidates` sampled answers per prompt.

    python stages/generate.py --prompts data/prompts/train.jsonl \
        --principles constitution/principles.yaml --out data/candidates.jsonl

With `generate.system_prompt: constitution` the answers are sampled under the principles as a
system prompt, which each candidate records and nothing downstream sees (context distillation).

Seeded per batch, so the same params give byte-identical output; finished batches survive a
crash (see minicc/resume.py) and a rerun only does the missing ones.
"""

from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.constitution import system_prompt_text
from minicc.generation import answer_inputs, answer_prompts, candidate_plan
from minicc.jsonl import write_records
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import load_prompts
from minicc.resume import resumable
from minicc.seeding import seed_everything


def main(
    prompts: Annotated[
        Path, typer.Option(help="Prompt file (JSONL of id, prompt, category, source).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the candidates (JSONL).")],
    principles: Annotated[
        Path,
        typer.Option(
            help="Constitution principles (YAML), read for generate.system_prompt constitution."
        ),
    ] = Path("constitution/principles.yaml"),
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("generate"):
        params = load_params(params_file)
        prompt_rows = load_prompts(prompts)
        guided = params.generate.system_prompt == "constitution"
        plan = candidate_plan(params.generate, system_prompt_text(principles) if guided else None)
        seed_everything(params.seed)
        loaded = load_model(params.models.generator, params.models)
        inputs = answer_inputs(prompt_rows, plan, params.seed, loaded.model_id)
        with resumable("generate", inputs) as log:
            candidates, count = answer_prompts(loaded, prompt_rows, plan, params.seed, log)
            write_records(out, candidates)
        finished = sum(c.finish_reason != "length" for c in candidates)
        print(
            f"generate: {len(candidates)} candidates for {len(prompt_rows)} prompts "
            f"({finished} ended before max_new_tokens) with {loaded.model_id}, system prompt "
            f"{plan.system_prompt} -> {out} "
            f"[{count.batches_run} batches run, {count.batches_resumed} resumed]"
        )


if __name__ == "__main__":
    typer.run(main)
