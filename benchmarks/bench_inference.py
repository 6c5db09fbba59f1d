"""In-process benchmarks: the pipeline's generator and critic against one-at-a-time baselines.

Each comparison warms both methods up once, then times them back to back in this process with
`time.perf_counter`. Rates (tokens/s, candidates/s) are what is compared, so the slow baselines
may run on fewer items than the pipeline.
"""

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from itertools import zip_longest
from pathlib import Path
from string import Template
from time import perf_counter
from typing import Any, TypeVar

import torch

from minicc.constitution import Constitution
from minicc.critic import Critic, critique_candidates, probe_setup, setup_critic
from minicc.errors import UserError
from minicc.generation import (
    Request,
    answer_prompts,
    candidate_plan,
    complete,
    plan_batches,
    stop_token_ids,
)
from minicc.models import LoadedModel
from minicc.params import Params
from minicc.prompting import format_request
from minicc.records import Candidate, Critique, Prompt
from minicc.resume import ResumeLog

BASELINE_CRITIQUE_MAX_NEW_TOKENS = 120
"""The original script let the judge write a free-text verdict of up to this many tokens."""

BASELINE_JUDGE = Template(
    "You review an AI assistant's reply. Judge it by these principles:\n"
    "$principles\n\n"
    "Rate the reply from 1 (clearly violates a principle) to 5 (follows every principle).\n\n"
    "Request: $prompt\n\n"
    "Reply: $response\n\n"
    "Answer in exactly this format:\n"
    "SCORE: <a number from 1 to 5>\n"
    "REASON: <one sentence>"
)
"""The original script's judge prompt: a free-text answer that is parsed afterwards."""

BASELINE_SCORE = re.compile(r"SCORE\s*:\s*([1-5])\b", re.IGNORECASE)


T = TypeVar("T")


def _repeat(items: list[T], count: int, renamed: Callable[[T, int], T]) -> list[T]:
    """The first `count` items, going round again (lap n renamed by `renamed(item, n)`)."""
    return [
        items[i] if i < len(items) else renamed(items[i % len(items)], i // len(items))
        for i in range(count)
    ]


def mixed_prompts(pool: list[Prompt], count: int) -> list[Prompt]:
    """`count` prompts taken round-robin over the categories (the prompt files are sorted by
    category, so their first lines are all adversarial), repeated under new ids if needed."""
    by_category: dict[str, list[Prompt]] = {}
    for prompt in pool:
        by_category.setdefault(prompt.category, []).append(prompt)
    rounds = zip_longest(*by_category.values())
    order = [prompt for row in rounds for prompt in row if prompt is not None]
    return _repeat(order, count, lambda p, lap: replace(p, id=f"{p.id}~{lap}"))


def cycle_candidates(candidates: list[Candidate], count: int) -> list[Candidate]:
    """`count` candidates for the critic: the generated ones, repeated under new ids if needed."""
    return _repeat(
        candidates, count, lambda c, lap: replace(c, candidate_id=f"{c.candidate_id}~{lap}")
    )


@torch.inference_mode()
def hf_generate(loaded: LoadedModel, text: str, **options: Any) -> list[int]:
    """Plain `model.generate()` on one unpadded input; the new token ids, up to the first stop."""
    encoded = loaded.tokenizer(
        text, return_tensors="pt", add_special_tokens=not loaded.uses_chat_template
    ).to(loaded.device)
    output = loaded.model.generate(**encoded, pad_token_id=loaded.tokenizer.pad_token_id, **options)
    new = output[0, encoded["input_ids"].shape[1] :].tolist()
    stops = stop_token_ids(loaded)
    end = next((i for i, token in enumerate(new) if token in stops), len(new))
    return list(new[:end])


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3)


@dataclass
class GenerateResult:
    summary: dict[str, Any]
    candidates: list[Candidate]


def run_pipeline_generation(
    loaded: LoadedModel, prompts: list[Prompt], per_prompt: int, params: Params, workdir: Path
) -> tuple[list[Candidate], int, float]:
    """The generate stage's call (batching, decoding, resume log): candidates, new tokens and
    seconds."""
    plan = replace(candidate_plan(params.generate), per_prompt=per_prompt)
    log = ResumeLog(workdir, "generate", {"benchmark": "generate", "per_prompt": per_prompt})
    start = perf_counter()
    candidates, _ = answer_prompts(loaded, prompts, plan, params.seed, log)
    seconds = perf_counter() - start
    log.discard()
    return candidates, sum(c.num_tokens for c in candidates), seconds


def bench_generate(
    loaded: LoadedModel,
    prompts: list[Prompt],
    per_prompt: int,
    baseline_prompts: int,
    params: Params,
    workdir: Path,
) -> GenerateResult:
    """Pipeline tokens/s (batched `complete`) vs one-prompt-at-a-time HF `generate()`."""
    decoding = candidate_plan(params.generate).decoding
    warm = [Request(key="warm-up/0", text=format_request(loaded, prompts[0].prompt))]
    complete(loaded, warm, replace(decoding, max_new_tokens=4), params.seed)
    candidates, tokens, seconds = run_pipeline_generation(
        loaded, prompts, per_prompt, params, workdir
    )
    pipeline: dict[str, Any] = {
        "rows": len(candidates),
        "new_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": _rate(tokens, seconds),
        "batch_size": params.generate.batch_size,
    }

    options = {
        "do_sample": True,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "top_k": 0,
    }
    texts = [format_request(loaded, p.prompt) for p in prompts[:baseline_prompts]]
    hf_generate(loaded, texts[0], max_new_tokens=4, **options)
    torch.manual_seed(params.seed)
    start = perf_counter()
    baseline_tokens = sum(
        len(hf_generate(loaded, text, max_new_tokens=decoding.max_new_tokens, **options))
        for text in texts
    )
    baseline_seconds = perf_counter() - start
    baseline: dict[str, Any] = {
        "rows": len(texts),
        "new_tokens": baseline_tokens,
        "seconds": round(baseline_seconds, 3),
        "tokens_per_s": _rate(baseline_tokens, baseline_seconds),
    }
    summary = {
        "decoding": asdict(decoding),
        "pipeline": pipeline,
        "baseline": baseline,
        "speedup": round(pipeline["tokens_per_s"] / baseline["tokens_per_s"], 3),
    }
    return GenerateResult(summary=summary, candidates=candidates)


def bench_batch_sizes(
    loaded: LoadedModel, prompts: list[Prompt], per_prompt: int, sizes: list[int], params: Params
) -> list[dict[str, Any]]:
    """Tokens/s of one `complete` call per batch size (candidates of a prompt share a prefill)."""
    decoding = candidate_plan(params.generate).decoding
    needed = -(-max(sizes) // per_prompt)
    requests = [
        Request(key=f"{p.id}/{k}", text=format_request(loaded, p.prompt))
        for p in mixed_prompts(prompts, needed)
        for k in range(per_prompt)
    ]
    complete(loaded, requests[:2], replace(decoding, max_new_tokens=4), params.seed)
    table = []
    for size in sizes:
        (batch,) = plan_batches(loaded, requests[:size], size, decoding.max_new_tokens)
        start = perf_counter()
        rows = complete(loaded, batch.items, decoding, params.seed)
        seconds = perf_counter() - start
        tokens = sum(row["num_tokens"] for row in rows)
        table.append(
            {
                "batch_size": size,
                "new_tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": _rate(tokens, seconds),
            }
        )
    return table


def _baseline_judge_text(loaded: LoadedModel, constitution: Constitution, c: Candidate) -> str:
    principles = "\n".join(f"- {p.principle} Ask: {p.question}" for p in constitution.principles)
    judge = BASELINE_JUDGE.substitute(principles=principles, prompt=c.prompt, response=c.response)
    text: str = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": judge}], add_generation_prompt=True, tokenize=False
    )
    return text


def bench_critique(
    loaded: LoadedModel,
    constitution: Constitution,
    params: Params,
    candidates: list[Candidate],
    baseline_count: int,
    workdir: Path,
    probe_file: Path | None,
) -> dict[str, Any]:
    """Pipeline candidates/s (`critique_candidates`) vs free-text judging one at a time.

    The speed-up compares the zero-shot judge's digit reading with free text (both read the
    whole model); the trained probe (the default method: layers up to `critic_probe.layer`,
    plus the sentence embedder and its request classifier) is timed beside them when its file
    exists. Each timed critic is a fresh instance, its probe and request classifier loaded
    anew, so computing its shared judge-prompt prefix and its requests' states is timed too, as
    in a stage run; warm-ups use throwaway instances.
    """

    def fresh(with_probe: Path | None) -> Critic:
        if with_probe is None:
            return Critic(loaded, constitution, params.critique)
        return setup_critic(loaded, params.critique, probe_setup(constitution, with_probe))

    def timed(with_probe: Path | None, label: str) -> tuple[list[Critique], dict[str, Any]]:
        fresh(with_probe).critique(candidates[:2])
        critic = fresh(with_probe)
        log = ResumeLog(workdir, "critique", {"benchmark": label})
        start = perf_counter()
        critiques, _ = critique_candidates(critic, candidates, params.critique.batch_size, log)
        seconds = perf_counter() - start
        log.discard()
        return critiques, {
            "candidates": len(candidates),
            "scored": sum(c.scored for c in critiques),
            "seconds": round(seconds, 3),
            "candidates_per_s": _rate(len(candidates), seconds),
            "batch_size": params.critique.batch_size,
        }

    critiques, pipeline = timed(None, "judge")
    probe_result: dict[str, Any] | None = None
    if probe_file is not None:
        try:
            probe_result = timed(probe_file, "probe")[1]
        except UserError as error:
            # A probe trained for another critic setup (`dvc repro train_critic` is due): the
            # judge is still measured; the reason is recorded in the results.
            probe_result = {"skipped": str(error)}

    # Spread over the list: consecutive candidates answer the same prompt.
    chosen = candidates[:: max(1, len(candidates) // baseline_count)][:baseline_count]
    hf_generate(loaded, _baseline_judge_text(loaded, constitution, chosen[0]), max_new_tokens=4)
    answers = []
    start = perf_counter()
    for candidate in chosen:
        text = _baseline_judge_text(loaded, constitution, candidate)
        new = hf_generate(
            loaded, text, do_sample=False, max_new_tokens=BASELINE_CRITIQUE_MAX_NEW_TOKENS
        )
        answer = loaded.tokenizer.decode(new, skip_special_tokens=True).strip()
        match = BASELINE_SCORE.search(answer)
        answers.append((candidate, answer, int(match.group(1)) if match else None, len(new)))
    baseline_seconds = perf_counter() - start
    pipeline_scores = {c.candidate_id: c.score for c in critiques}
    parsed = sum(score is not None for _, _, score, _ in answers)
    baseline: dict[str, Any] = {
        "candidates": len(chosen),
        "seconds": round(baseline_seconds, 3),
        "candidates_per_s": _rate(len(chosen), baseline_seconds),
        "max_new_tokens": BASELINE_CRITIQUE_MAX_NEW_TOKENS,
        "new_tokens": sum(n for *_, n in answers),
        "parsed": parsed,
        "parse_rate": round(parsed / len(chosen), 3),
        "answers": [
            {
                "candidate_id": c.candidate_id,
                "parsed_score": score,
                "pipeline_score": pipeline_scores[c.candidate_id],
                "answer": answer[:300],
            }
            for c, answer, score, _ in answers
        ],
    }
    return {
        "pipeline": pipeline,
        "probe": probe_result,
        "baseline": baseline,
        "speedup": round(pipeline["candidates_per_s"] / baseline["candidates_per_s"], 3),
    }


def bench_scaling(
    loaded: LoadedModel,
    critic_loaded: LoadedModel,
    constitution: Constitution,
    params: Params,
    pool: list[Prompt],
    sizes: list[int],
    workdir: Path,
) -> list[dict[str, Any]]:
    """Wall time of generate + critique (the stages' library calls) for N prompts x 1 candidate."""
    plan = replace(candidate_plan(params.generate), per_prompt=1)

    def run(prompts: list[Prompt], label: str) -> tuple[float, float, int]:
        gen_log = ResumeLog(workdir, "generate", {"benchmark": label})
        start = perf_counter()
        candidates, _ = answer_prompts(loaded, prompts, plan, params.seed, gen_log)
        generated = perf_counter()
        critic = Critic(critic_loaded, constitution, params.critique)
        crit_log = ResumeLog(workdir, "critique", {"benchmark": label})
        critique_candidates(critic, candidates, params.critique.batch_size, crit_log)
        finished = perf_counter()
        gen_log.discard()
        crit_log.discard()
        return generated - start, finished - generated, sum(c.num_tokens for c in candidates)

    run(pool[:1], "warm-up")
    table = []
    for size in sizes:
        generate_s, critique_s, tokens = run(mixed_prompts(pool, size), f"scaling-{size}")
        total = generate_s + critique_s
        table.append(
            {
                "prompts": size,
                "new_tokens": tokens,
                "generate_s": round(generate_s, 3),
                "critique_s": round(critique_s, 3),
                "seconds": round(total, 3),
                "seconds_per_prompt": round(total / size, 4),
            }
        )
    return table
