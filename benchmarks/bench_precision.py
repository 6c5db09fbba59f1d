"""float32 against bfloat16 on this machine: the three kinds of work the stages do, side by side.

`models.dtype: auto` picks bfloat16 on a CPU that computes it natively; this measures what that
buys. Each precision loads the generator afresh and runs, through the stages' own functions:
- a critic forward pass (`Critic.probe_features` at `critic_probe.layer`, the probe's path)
  over a batch of candidates;
- generation (`answer_prompts` with the generate stage's decoding);
- LoRA training steps (`fit` on a few SFT examples made from the generated answers).
Each gets an untimed warm-up on smaller inputs first.
"""

from dataclasses import replace
from pathlib import Path
from time import perf_counter
from typing import Any

from accelerate import Accelerator

from minicc.constitution import Constitution
from minicc.critic import Critic
from minicc.generation import answer_inputs, answer_prompts, candidate_plan
from minicc.lora import add_lora, resolve_target_modules
from minicc.models import load_model
from minicc.params import Params, Precision
from minicc.records import Candidate, Prompt
from minicc.resume import ResumeLog
from minicc.sft import SftExample
from minicc.training import encode_example, fit

PRECISIONS: tuple[Precision, ...] = ("float32", "bfloat16")


def _examples(candidates: list[Candidate]) -> list[SftExample]:
    return [
        SftExample(
            prompt_id=c.prompt_id,
            category=c.category,
            messages=[
                {"role": "user", "content": c.prompt},
                {"role": "assistant", "content": c.response},
            ],
            score=5.0,
            candidate_id=c.candidate_id,
        )
        for c in candidates
    ]


def _timed(work: Any) -> float:
    start = perf_counter()
    work()
    return perf_counter() - start


def _one_precision(
    params: Params,
    precision: Precision,
    constitution: Constitution,
    prompts: list[Prompt],
    workdir: Path,
) -> dict[str, Any]:
    loaded = load_model(params.models.generator, replace(params.models, dtype=precision))
    plan = replace(candidate_plan(params.generate), per_prompt=2)

    def answers(chosen: list[Prompt]) -> list[Candidate]:
        inputs = answer_inputs(chosen, plan, params.seed, loaded.model_id)
        log = ResumeLog(workdir, f"precision-{precision}", inputs)
        rows, _ = answer_prompts(loaded, chosen, plan, params.seed, log)
        log.discard()
        return rows

    answers(prompts[:1])
    generated: list[Candidate] = []
    generate_s = _timed(lambda: generated.extend(answers(prompts)))
    tokens = sum(c.num_tokens for c in generated)

    # The probe's features at its configured layer: no trained probe is needed to time them.
    layer = params.critic_probe.layer
    critic = Critic(loaded, constitution, params.critique)
    rows = [(c.prompt, c.response) for c in generated]
    keys = [c.candidate_id for c in generated]
    critic.probe_features(rows[:2], keys[:2], layer)
    critic_s = _timed(lambda: critic.probe_features(rows, keys, layer))

    train_params = replace(params.train, epochs=1)
    model = add_lora(loaded.model, train_params, resolve_target_modules(loaded.model, "auto"))
    examples = [encode_example(loaded, e, train_params.max_seq_len) for e in _examples(generated)]
    pad_id = loaded.tokenizer.pad_token_id
    # One validation example: fit's two validation passes then cost little next to the steps.
    val = examples[:1]
    warm = examples[: train_params.batch_size]
    fit(Accelerator(cpu=True), model, warm, val, train_params, pad_id=pad_id, seed=params.seed)
    steps = -(-len(examples) // train_params.batch_size)
    train_s = _timed(
        lambda: fit(
            Accelerator(cpu=True), model, examples, val, train_params, pad_id=pad_id, seed=1
        )
    )
    return {
        "weights": str(loaded.model.dtype).removeprefix("torch."),
        "generate_tokens_per_s": round(tokens / generate_s, 2),
        "critic_rows_per_s": round(len(rows) / critic_s, 2),
        "train_steps": steps,
        "train_s_per_step": round(train_s / steps, 3),
    }


def bench_precision(
    params: Params, constitution: Constitution, prompts: list[Prompt], workdir: Path
) -> dict[str, Any]:
    """Rates of both precisions and bfloat16's speed-up over float32 for each kind of work."""
    by_precision = {
        precision: _one_precision(params, precision, constitution, prompts, workdir)
        for precision in PRECISIONS
    }
    full, half = by_precision["float32"], by_precision["bfloat16"]
    return {
        **by_precision,
        "bfloat16_speedup": {
            "generate": round(half["generate_tokens_per_s"] / full["generate_tokens_per_s"], 2),
            "critic": round(half["critic_rows_per_s"] / full["critic_rows_per_s"], 2),
            "train": round(full["train_s_per_step"] / half["train_s_per_step"], 2),
        },
    }
