"""Batched, seeded text generation that returns only the newly generated text."""

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from minicc.batching import check_context, length_sorted_batches
from minicc.errors import UserError
from minicc.models import LoadedModel
from minicc.padding import unpadded_positions
from minicc.params import EvaluateParams, GenerateParams, SystemPrompt
from minicc.prefix_cache import PrefixCache
from minicc.prompting import encode_batch, format_request, request_stops
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


def stop_token_ids(loaded: LoadedModel) -> set[int]:
    """The tokens that end an answer: the generation config's EOS ids and the tokenizer's."""
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
    lengths = {}
    for request in requests:
        length = len(loaded.tokenizer(request.text, add_special_tokens=False)["input_ids"])
        what = f"the input ({length} tokens) with max_new_tokens={max_new_tokens}"
        check_context(loaded, request.key, length + max_new_tokens, what, "shorten the prompt")
        lengths[request.key] = length
    return length_sorted_batches(requests, lambda r: lengths[r.key], lambda r: r.key, batch_size)


_NUCLEUS_CANDIDATES = 512
"""Sampling looks for the top-p nucleus among this many most likely tokens first, and sorts the
whole vocabulary only when they hold less than top_p of the mass: the same nucleus either way,
without sorting 50k probabilities per row per step (which cost as much as the model itself)."""


def row_generators(device: torch.device, seed: int, keys: Sequence[str]) -> list[torch.Generator]:
    """One random stream per row, seeded from the row's own key.

    A stream per batch (seeded from its first key) made every row's sample depend on which rows
    shared its batch: one more candidate to revise shifted the batches and redrew nearly every
    other revision, so two pipeline runs differed by a new draw as well as by what was changed.
    A row's logits still depend on its batch in their last bits: in float32 that tips no sampled
    token, in bfloat16 it does (benchmarks/batch_invariance.py), so there a regrouped batch still
    redraws its rows.
    """
    generators = []
    for key in keys:
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(seed, "generate", key))
        generators.append(generator)
    return generators


def pick_next_tokens(
    logits: torch.Tensor, decoding: Decoding, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Greedy, or temperature + nucleus (top-p) sampling, for a batch of next-token logits.

    Sampling draws one uniform number per row from that row's generator and takes the token
    where it falls in the row's cumulative nucleus (inverse-CDF sampling). Hand-written because
    `torch.multinomial` takes one generator for the whole batch, so a row's draw would depend on
    the rows before it; and because a row always consumes exactly one number per step, its
    tokens do not depend on how wide a tensor its nucleus was searched in either.
    """
    if not decoding.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / decoding.temperature, dim=-1)
    uniforms = torch.stack(
        [torch.rand((), generator=g, device=probs.device) for g in generators]
    ).unsqueeze(-1)
    if decoding.top_p >= 1.0:
        return _inverse_cdf(probs, uniforms).squeeze(-1)
    top_probs, top_ids = probs.topk(min(_NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    if bool((top_probs.sum(dim=-1) < decoding.top_p).any()):
        top_probs, top_ids = probs.sort(dim=-1, descending=True)
    mass_before = top_probs.cumsum(dim=-1) - top_probs
    nucleus = top_probs.masked_fill(mass_before >= decoding.top_p, 0.0)
    return top_ids.gather(-1, _inverse_cdf(nucleus, uniforms)).squeeze(-1)


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the index where `uniforms` (in [0, 1)) falls in the cumulative `weights`.

    Never an index of zero weight: rounding can put u * total at or past the last cumulative
    value, so the index is held at the row's last positive weight.
    """
    cumulative = weights.cumsum(dim=-1)
    chosen = torch.searchsorted(cumulative, uniforms * cumulative[:, -1:], right=True)
    last_positive = (weights > 0).long().cumsum(dim=-1).argmax(dim=-1, keepdim=True)
    return torch.minimum(chosen, last_positive)


@dataclass(frozen=True)
class SharedPrefix:
    """Text every request of a run starts with (few-shot examples), its cache computed once."""

    cache: PrefixCache
    text: str


def shared_prefix(loaded: LoadedModel, requests: Sequence[Request]) -> SharedPrefix | None:
    """The requests' common text up to its last line break, or None when there is none.

    Cutting at a line break keeps the prefix and the rest tokenizing as they would together.
    Every request keeps at least its last character after the prefix: a chat-formatted request
    ends with a line break, so the common text of one request (or of identical ones) would
    otherwise be all of it, and a forward pass over an empty suffix fails.
    """
    common = os.path.commonprefix([r.text[:-1] for r in requests])
    text = common[: common.rfind("\n") + 1]
    if not text:
        return None
    return SharedPrefix(PrefixCache(loaded, "shorten the shared instructions"), text)


def _prefill(
    loaded: LoadedModel, requests: list[Request]
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Cache, next-token logits and attention mask after reading each request's text.

    Identical inputs (the candidates of one prompt) share one prefill: it is run once per
    distinct text and its key/value cache copied to every row that needs it.
    """
    distinct = list(dict.fromkeys(r.text for r in requests))
    rows = torch.tensor([distinct.index(r.text) for r in requests], device=loaded.device)
    encoded = encode_batch(loaded, distinct)
    prefill = loaded.model(
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        position_ids=unpadded_positions(encoded["attention_mask"]),
        use_cache=True,
        **loaded.last_logits_only,
    )
    cache = getattr(prefill, loaded.cache_argument)
    cache.batch_select_indices(rows)
    return cache, prefill.logits[rows, -1, :], encoded["attention_mask"][rows]


def _prefill_after(
    loaded: LoadedModel, shared: SharedPrefix, requests: list[Request]
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """As _prefill, reading only what follows the shared prefix (its cache is copied in)."""
    suffixes = [r.text.removeprefix(shared.text) for r in requests]
    inputs = shared.cache.inputs(shared.text, suffixes, [r.key for r in requests])
    output = loaded.model(**inputs, **loaded.last_logits_only)
    cache = getattr(output, loaded.cache_argument)
    return cache, output.logits[:, -1, :], inputs["attention_mask"]


@torch.inference_mode()
def complete(
    loaded: LoadedModel,
    requests: list[Request],
    decoding: Decoding,
    seed: int,
    shared: SharedPrefix | None = None,
    stop_texts: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Generate one completion per request; each row samples from its own key's generator.

    With `shared`, every request starts with `shared.text`, read once for the whole run.
    Decoding runs one token per step for the whole batch until every row has stopped: at a stop
    token, or once its text holds one of `stop_texts` (cut off there, finish reason "stop").

    Returns JSON-ready dicts (`key` plus the Completion fields) so results can go straight into
    a resume log.
    """
    generators = row_generators(loaded.device, seed, [r.key for r in requests])
    if shared is None:
        cache, logits, attention_mask = _prefill(loaded, requests)
    else:
        cache, logits, attention_mask = _prefill_after(loaded, shared, requests)
    positions = attention_mask.sum(dim=-1, keepdim=True) - 1
    stop_ids = torch.tensor(sorted(stop_token_ids(loaded)), device=loaded.device)
    finished = torch.zeros(len(requests), dtype=torch.bool, device=loaded.device)
    steps: list[torch.Tensor] = []
    texts = _StopTexts(loaded, stop_texts, len(requests))
    for _ in range(decoding.max_new_tokens):
        next_tokens = pick_next_tokens(logits, decoding, generators)
        next_tokens = next_tokens.masked_fill(finished, int(stop_ids[0]))
        steps.append(next_tokens)
        finished |= torch.isin(next_tokens, stop_ids)
        finished |= texts.check(steps, finished)
        if bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
        positions = positions + 1
        output = loaded.model(
            input_ids=next_tokens.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            **{loaded.cache_argument: cache},
            **loaded.last_logits_only,
        )
        cache, logits = getattr(output, loaded.cache_argument), output.logits[:, -1, :]
    generated = torch.stack(steps, dim=1).tolist()
    stop_set = set(stop_ids.tolist())
    results = []
    for row, (request, tokens) in enumerate(zip(requests, generated, strict=True)):
        stop = next((i for i, token in enumerate(tokens) if token in stop_set), None)
        kept = tokens if stop is None else tokens[:stop]
        text = loaded.tokenizer.decode(kept, skip_special_tokens=True)
        reason: FinishReason = "length" if stop is None else "eos"
        if texts.stopped_at[row] is not None:
            kept = tokens[: texts.stopped_at[row]]
            text = texts.cut(loaded.tokenizer.decode(kept, skip_special_tokens=True))
            reason = "stop"
        completion = Completion(text=text.strip(), num_tokens=len(kept), finish_reason=reason)
        results.append({"key": request.key, **completion.__dict__})
    return results


STOP_TEXT_WINDOW = 8
"""Tokens decoded per row and step to look for a stop text; each is a few characters long."""


class _StopTexts:
    """Watches each row's new text for `texts` while decoding (base models only: a chat model's
    turn ends with a token, so for it `texts` is empty and nothing is decoded)."""

    def __init__(self, loaded: LoadedModel, texts: tuple[str, ...], rows: int) -> None:
        self.loaded, self.texts = loaded, texts
        self.stopped_at: list[int | None] = [None] * rows
        """Per row: how many new tokens it had when its text first held a stop text."""

    def check(self, steps: list[torch.Tensor], finished: torch.Tensor) -> torch.Tensor:
        """Rows whose text holds a stop text after this step."""
        hit = torch.zeros_like(finished)
        if not self.texts:
            return hit
        # A stop text new at this step ends within the last few tokens: decode only those.
        recent = torch.stack(steps[-STOP_TEXT_WINDOW:], dim=1).tolist()
        for row in (~finished).nonzero().flatten().tolist():
            text = self.loaded.tokenizer.decode(recent[row], skip_special_tokens=True)
            if any(stop in text for stop in self.texts):
                self.stopped_at[row] = len(steps)
                hit[row] = True
        return hit

    def cut(self, text: str) -> str:
        """`text` up to its first stop text."""
        ends = [text.find(stop) for stop in self.texts if stop in text]
        return text[: min(ends)] if ends else text


@dataclass(frozen=True)
class AnswerPlan:
    """How many answers each prompt gets, how they are decoded and how many share a batch."""

    per_prompt: int
    decoding: Decoding
    batch_size: int
    label: str
    """Names the work in the progress bar (the stage)."""
    system_prompt: SystemPrompt = "none"
    """Recorded in every answer; `system_text` is what it means."""
    system_text: str | None = None
    """Shown to the model before each request (see prompting.format_request); None: nothing."""


def candidate_plan(params: GenerateParams, constitution_text: str | None = None) -> AnswerPlan:
    """The generate stage's plan: `num_candidates` sampled answers per prompt.

    With `generate.system_prompt: constitution` the answers are sampled under
    `constitution_text` (constitution.system_prompt_text); nothing downstream sees it.
    """
    decoding = Decoding(
        do_sample=True,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )
    match params.system_prompt:
        case "none":
            system_text = None
        case "constitution":
            if constitution_text is None:
                raise UserError("generate.system_prompt is 'constitution' but no constitution")
            system_text = constitution_text
    return AnswerPlan(
        params.num_candidates,
        decoding,
        params.batch_size,
        "generate",
        params.system_prompt,
        system_text,
    )


def evaluation_plan(params: EvaluateParams) -> AnswerPlan:
    """The evaluate stage's plan, the same for the baseline and the fine-tuned model:
    `num_samples` answers per prompt with the declared decoding (greedy by default).

    Both models answer through `answer_prompts` with this plan and the same seed, and their rows
    use the same keys (`<prompt_id>/<k>`), so with sampling both draw from the same per-batch
    random streams.
    """
    decoding = Decoding(
        do_sample=params.do_sample,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )
    return AnswerPlan(params.num_samples, decoding, params.batch_size, "evaluate")


def complete_requests(
    loaded: LoadedModel,
    requests: list[Request],
    decoding: Decoding,
    batch_size: int,
    seed: int,
    log: ResumeLog,
    label: str,
    share_prefix: bool = False,
    stop_texts: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, Any]], RunCount]:
    """Completions of `requests` by key, batched by length, finished batches kept in `log`.

    `share_prefix`: read the requests' common beginning (e.g. few-shot examples) once for
    the whole run instead of once per row; the results differ only at float-rounding level.
    `stop_texts`: see `complete`.
    """
    batches = plan_batches(loaded, requests, batch_size, decoding.max_new_tokens)
    shared = shared_prefix(loaded, requests) if share_prefix and requests else None
    results, count = run_resumable(
        batches,
        lambda batch: complete(loaded, batch, decoding, seed, shared, stop_texts),
        log,
        label,
    )
    return {r["key"]: r for r in results}, count


def answer_prompts(
    loaded: LoadedModel, prompts: list[Prompt], plan: AnswerPlan, seed: int, log: ResumeLog
) -> tuple[list[Candidate], RunCount]:
    """`plan.per_prompt` answers to every prompt, in prompt-file order, ids `<prompt id>/<k>`.

    Both the generate stage and the evaluation of either model answer through this function,
    so they differ only in their plan.
    """
    by_id = {p.id: p for p in prompts}
    requests = [
        Request(key=f"{p.id}/{k}", text=format_request(loaded, p.prompt, plan.system_text))
        for p in prompts
        for k in range(plan.per_prompt)
    ]
    completions, count = complete_requests(
        loaded,
        requests,
        plan.decoding,
        plan.batch_size,
        seed,
        log,
        plan.label,
        stop_texts=request_stops(loaded),
    )
    answers = []
    for request in requests:
        prompt = by_id[request.key.rsplit("/", 1)[0]]
        done = completions[request.key]
        answers.append(
            Candidate(
                prompt_id=prompt.id,
                candidate_id=request.key,
                prompt=prompt.prompt,
                category=prompt.category,
                response=done["text"],
                num_tokens=done["num_tokens"],
                finish_reason=done["finish_reason"],
                generator=loaded.model_id,
                system_prompt=plan.system_prompt,
            )
        )
    return answers, count


def answer_inputs(
    prompts: list[Prompt], plan: AnswerPlan, seed: int, model_id: str
) -> dict[str, Any]:
    """Everything that changes the answers; names the resume log."""
    return {
        "prompts": [asdict(p) for p in prompts],
        "plan": asdict(plan),
        "seed": seed,
        "model": model_id,
    }
