"""Answer the evaluation prompts with the baseline or the fine-tuned model.

    python stages/evaluate.py --model baseline --prompts data/prompts/eval.jsonl \
        --out data/eval/baseline.jsonl
    python stages/evaluate.py --model finetuned --prompts data/prompts/eval.jsonl \
        --adapter models/lora-sft --out data/eval/finetuned.jsonl

Both use `models.generator`; the fine-tuned model is that base with the LoRA adapter attached
by peft, not merged into its weights (minicc/lora.py `apply_adapter` says why).
Decoding comes from the `evaluate` params (greedy by default). Crash-safe like generate.
"""

from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.errors import UserError
from minicc.generation import answer_inputs, answer_prompts, evaluation_plan
from minicc.jsonl import write_records
from minicc.lora import apply_adapter
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import load_prompts
from minicc.resume import resumable
from minicc.seeding import seed_everything


def main(
    model: Annotated[str, typer.Option(help="baseline (the base model) or finetuned (+ adapter).")],
    prompts: Annotated[Path, typer.Option(help="Evaluation prompts (JSONL).")],
    out: Annotated[Path, typer.Option(help="Where to write the responses (JSONL).")],
    adapter: Annotated[
        Path | None, typer.Option(help="LoRA adapter directory (finetuned only).")
    ] = None,
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("evaluate"):
        if model not in ("baseline", "finetuned"):
            raise UserError(f"--model must be baseline or finetuned, got {model!r}")
        if (model == "finetuned") != (adapter is not None):
            raise UserError("--adapter is required for --model finetuned and refused otherwise")
        params = load_params(params_file)
        prompt_rows = load_prompts(prompts)
        seed_everything(params.seed)
        loaded = load_model(params.models.generator, params.models)
        if adapter is not None:
            loaded = apply_adapter(loaded, adapter)
        plan = evaluation_plan(params.evaluate)
        inputs = answer_inputs(prompt_rows, plan, params.seed, loaded.model_id)
        with resumable(f"evaluate-{model}", inputs) as log:
            responses, count = answer_prompts(loaded, prompt_rows, plan, params.seed, log)
            write_records(out, responses)
        finished = sum(r.finish_reason != "length" for r in responses)
        print(
            f"evaluate ({model}): {len(responses)} responses to {len(prompt_rows)} prompts "
            f"({finished} ended before max_new_tokens) with {loaded.model_id} -> {out} "
            f"[{count.batches_run} batches run, {count.batches_resumed} resumed]"
        )


if __name__ == "__main__":
    typer.run(main)
