"""How often a sampled answer stays the same when the rows beside it in its batch change.

Each row of a batch samples from its own generator, seeded from the row's key
(`minicc.generation.row_generators`), so its random numbers do not depend on its batch. Its
logits still do, a little: the batch's padding and shapes change how the matrix products round,
and one sampled token that tips changes everything after it. This measures how much that
matters, in each precision: the generate stage's decoding (`params.yaml`) answers `--prompts`
prompts of the committed training pool, then the same prompts with `--extra` more prompts
mixed in (so the length-sorted batches are regrouped), and counts the answers that are
byte-identical in both runs. No timing: a determinism check, kept beside the other measurements
of the stages' generation.

    .venv/bin/python benchmarks/batch_invariance.py --out benchmarks/batch_invariance.json
"""

import json
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Annotated

import typer
from bench_inference import mixed_prompts

from minicc.generation import answer_inputs, answer_prompts, candidate_plan
from minicc.jsonl import atomic_write_text
from minicc.models import load_model
from minicc.params import Params, Precision, load_params
from minicc.records import Candidate, Prompt, load_prompts
from minicc.resume import ResumeLog

PRECISIONS: tuple[Precision, ...] = ("bfloat16", "float32")


def _answers(params: Params, precision: Precision, prompts: list[Prompt]) -> dict[str, str]:
    loaded = load_model(params.models.generator, replace(params.models, dtype=precision))
    plan = candidate_plan(params.generate)
    with TemporaryDirectory() as logs:
        log = ResumeLog(Path(logs), "generate", answer_inputs(prompts, plan, params.seed, "x"))
        candidates: list[Candidate]
        candidates, _ = answer_prompts(loaded, prompts, plan, params.seed, log)
    return {c.candidate_id: c.response for c in candidates}


def measure(params: Params, prompts: list[Prompt], extra: list[Prompt]) -> dict[str, object]:
    results: dict[str, object] = {}
    for precision in PRECISIONS:
        alone = _answers(params, precision, prompts)
        mixed = _answers(params, precision, prompts + extra)
        same = sum(alone[key] == mixed[key] for key in alone)
        results[precision] = {"answers": len(alone), "identical": same, "share": same / len(alone)}
        typer.echo(f"{precision}: {same} of {len(alone)} answers identical after regrouping")
    return results


def main(
    out: Annotated[Path, typer.Option(help="JSON file for the results")],
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    pool: Annotated[Path, typer.Option()] = Path("data/prompt_pool/train.jsonl"),
    prompts: Annotated[int, typer.Option(help="prompts compared")] = 24,
    extra: Annotated[int, typer.Option(help="prompts mixed in for the second run")] = 6,
) -> None:
    params = load_params(params_file)
    chosen = mixed_prompts(load_prompts(pool), prompts + extra)
    results = {
        "generate": {
            "num_candidates": params.generate.num_candidates,
            "batch_size": params.generate.batch_size,
            "max_new_tokens": params.generate.max_new_tokens,
            "temperature": params.generate.temperature,
            "top_p": params.generate.top_p,
        },
        "prompts": prompts,
        "extra": extra,
        **measure(params, chosen[:prompts], chosen[prompts:]),
    }
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
