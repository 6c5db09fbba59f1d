"""Batched, seeded text generation that returns only the newly generated text."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from minicc.errors import UserError
from minicc.models import LoadedModel
from minicc.params import GenerateParams
from minicc.prompting import encode_batch, format_request
from minicc.records import Candidate, FinishReason, Prompt
from minicc.resume import Batch, ResumeLog, RunCount, run_resumable
from minicc.seeding import derive_seed


@dataclass(frozen=True)
class Decoding:
    do_sample: bool
    """False: greedy (deterministic); True: sampling with temperature and nucleus top_p."""
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class Request:
    key: str
    """Unique name of this row, e.g. a candidate id."""
    text: str
    """Fully formatted model input (chat template or plain frame already applied)."""


def _stop_token_ids(loaded: LoadedModel) -> set[int]:
    configured = loaded.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(loaded.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def plan_batches(
    loaded: LoadedModel, requests: Sequence[Request], batch_size: int, max_new_tokens: int
) -> list[Batch[Request]]:
    """Group requests of similar length so batches carry little padding.

    Requests too long for the model's context (with room for the answer) are rejected by name:
    silently truncating a prompt would change what is being asked.
    """
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    lengths = {}
    for request in requests:
        length = len(loaded.tokenizer(request.text, add_special_tokens=False)["input_ids"])
        if limit is not None and length + max_new_tokens > limit:
            raise UserError(
                f"{request.key}: input is {length} tokens; with max_new_tokens={max_new_tokens} "
                f"it exceeds the model's context of {limit} tokens. Shorten the prompt."
            )
        lengths[request.key] = length
    ordered = sorted(requests, key=lambda r: (lengths[r.key], r.key))
    return [
        Batch(key=ordered[start].key, items=list(ordered[start : start + batch_size]))
        for start in range(0, len(ordered), batch_size)
    ]


@torch.inference_mode()
def complete(
    loaded: LoadedModel, requests: list[Request], decoding: Decoding, seed: int
) -> list[dict[str, Any]]:
    """Generate one completion per request; the batch's RNG is seeded from its first key.

    Returns JSON-ready dicts (`key` plus the Completion fields) so results can go straight into
    a resume log.
    """
    encoded = encode_batch(loaded, [r.text for r in requests])
    torch.manual_seed(derive_seed(seed, "generate", requests[0].key))
    sampling: dict[str, Any] = (
        # top_k=0 turns off the top-50 cut some generation configs add, so top_p alone decides.
        {
            "do_sample": True,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "top_k": 0,
        }
        if decoding.do_sample
        else {"do_sample": False}
    )
    stop_ids = _stop_token_ids(loaded)
    output = loaded.model.generate(
        **encoded,
        max_new_tokens=decoding.max_new_tokens,
        pad_token_id=loaded.tokenizer.pad_token_id,
        eos_token_id=sorted(stop_ids),
        **sampling,
    )
    new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
    results = []
    for request, tokens in zip(requests, new_tokens, strict=True):
        stop = next((i for i, token in enumerate(tokens) if token in stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        completion = Completion(
            text=loaded.tokenizer.decode(kept, skip_special_tokens=True).strip(),
            num_tokens=len(kept),
            finish_reason="length" if stop is None else "eos",
        )
        results.append({"key": request.key, **completion.__dict__})
    return results


def generate_candidates(
    loaded: LoadedModel, prompts: list[Prompt], params: GenerateParams, seed: int, log: ResumeLog
) -> tuple[list[Candidate], RunCount]:
    """`params.num_candidates` sampled responses per prompt, in prompt-file order."""
    by_id = {p.id: p for p in prompts}
    requests = [
        Request(key=f"{p.id}/{k}", text=format_request(loaded, p.prompt))
        for p in prompts
        for k in range(params.num_candidates)
    ]
    decoding = Decoding(
        do_sample=True,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )
    batches = plan_batches(loaded, requests, params.batch_size, params.max_new_tokens)
    results, count = run_resumable(
        batches, lambda batch: complete(loaded, batch, decoding, seed), log, "generate"
    )
    completions = {r["key"]: r for r in results}
    candidates = []
    for request in requests:
        prompt = by_id[request.key.rsplit("/", 1)[0]]
        done = completions[request.key]
        candidates.append(
            Candidate(
                prompt_id=prompt.id,
                candidate_id=request.key,
                prompt=prompt.prompt,
                category=prompt.category,
                response=done["text"],
                num_tokens=done["num_tokens"],
                finish_reason=done["finish_reason"],
                generator=loaded.model_id,
            )
        )
    return candidates, count


def generation_inputs(
    prompts: list[Prompt], params: GenerateParams, seed: int, model_id: str
) -> dict[str, Any]:
    """Everything that changes generated text; names the resume log."""
    return {
        "prompts": [asdict(p) for p in prompts],
        "params": asdict(params),
        "seed": seed,
        "model": model_id,
    }
