"""Responses of a model to the evaluation prompts: the same code and decoding for both models.

The baseline and the fine-tuned model go through `generate_responses` with the same
`evaluate` params and seed, and their rows use the same keys (`<prompt_id>/<k>`), so with
sampling both draw from the same per-batch random streams. Rows are `Candidate` records, which
the critic already reads.
"""

from dataclasses import asdict
from typing import Any

from minicc.generation import Decoding, Request, complete, plan_batches
from minicc.models import LoadedModel
from minicc.params import EvaluateParams
from minicc.prompting import format_request
from minicc.records import Candidate, Prompt
from minicc.resume import ResumeLog, RunCount, run_resumable


def evaluation_decoding(params: EvaluateParams) -> Decoding:
    return Decoding(
        do_sample=params.do_sample,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )


def generate_responses(
    loaded: LoadedModel, prompts: list[Prompt], params: EvaluateParams, seed: int, log: ResumeLog
) -> tuple[list[Candidate], RunCount]:
    """`params.num_samples` responses per prompt, in prompt-file order."""
    by_id = {p.id: p for p in prompts}
    requests = [
        Request(key=f"{p.id}/{k}", text=format_request(loaded, p.prompt))
        for p in prompts
        for k in range(params.num_samples)
    ]
    decoding = evaluation_decoding(params)
    batches = plan_batches(loaded, requests, params.batch_size, params.max_new_tokens)
    results, count = run_resumable(
        batches, lambda batch: complete(loaded, batch, decoding, seed), log, "evaluate"
    )
    done = {r["key"]: r for r in results}
    responses = []
    for request in requests:
        prompt = by_id[request.key.rsplit("/", 1)[0]]
        row = done[request.key]
        responses.append(
            Candidate(
                prompt_id=prompt.id,
                candidate_id=request.key,
                prompt=prompt.prompt,
                category=prompt.category,
                response=row["text"],
                num_tokens=row["num_tokens"],
                finish_reason=row["finish_reason"],
                generator=loaded.model_id,
            )
        )
    return responses, count


def evaluation_inputs(
    prompts: list[Prompt], params: EvaluateParams, seed: int, model_id: str
) -> dict[str, Any]:
    """Everything that changes the responses; names the resume log."""
    return {
        "prompts": [asdict(p) for p in prompts],
        "params": asdict(params),
        "seed": seed,
        "model": model_id,
    }
