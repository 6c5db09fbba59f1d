"""float32 against bfloat16 on this machine: the three kinds of work the stages do, side by side.

`models.dtype: auto` picks bfloat16 on a CPU that computes it natively; this measures what that
buys. Each precision loads the generator afresh and runs, through the stages' own functions:
- a critic forward pass (`Critic.probe_features` at `critic_probe.layer` and `request_layer`,
  the probe's path) over a batch of candidates;
- generation (`answer_prompts` with the generate stage's decoding);
- LoRA training steps (the train stage's TRL `SFTTrainer`, `minicc.trainers.sft_trainer`, on a
  few SFT examples made from the generated answers): the seconds between the Trainer's
  `on_step_begin` and `on_step_end` callbacks, so checkpoint writing and data set preparation
  are not counted.
Each gets an untimed warm-up on smaller inputs first.
"""

from dataclasses import replace
from pathlib import Path
from time import perf_counter
from typing import Any

from transformers import TrainerCallback

from minicc.constitution import Constitution
from minicc.critic import Critic
from minicc.generation import answer_inputs, answer_prompts, candidate_plan
from minicc.lora import add_lora, resolve_target_modules
from minicc.models import LoadedModel, load_model
from minicc.params import Params, Precision
from minicc.records import Candidate, Prompt
from minicc.resume import ResumeLog
from minicc.sft import SftExample
from minicc.trainers import sft_trainer
from minicc.training import sft_dataset

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
            finish_reason=c.finish_reason,
            trimmed=None,
            ends_turn=True,  # the whole reply and its EOS, as both precisions train it
        )
        for c in candidates
    ]


class StepTimer(TrainerCallback):
    """Seconds spent inside optimizer steps (forward, backward, optimizer), and their count."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0
        self._started = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._started = perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.seconds += perf_counter() - self._started
        self.steps += 1


def _train_seconds_per_step(
    params: Params, loaded: LoadedModel, examples: list[SftExample], workdir: Path
) -> tuple[int, float]:
    """Optimizer steps of one SFT epoch on `examples` and seconds per step, after a warm-up run
    of one batch (its own checkpoint directory, so the timed run does not resume from it)."""
    train_params = replace(params.train, epochs=1, grad_accum=1)
    model = add_lora(loaded.model, train_params, resolve_target_modules(loaded.model, "auto"))
    data = sft_dataset(loaded, examples, train_params.max_seq_len).dataset
    val = data.select(range(1))
    timers = []
    for name, rows in (
        ("warm-up", data.select(range(min(train_params.batch_size, len(data))))),
        ("timed", data),
    ):
        trainer = sft_trainer(
            model,
            loaded.tokenizer,
            rows,
            val,
            train_params,
            phase_dir=workdir / name,
            seed=params.seed,
        )
        timers.append(StepTimer())
        trainer.add_callback(timers[-1])
        trainer.train()
    timed = timers[-1]
    return timed.steps, timed.seconds / timed.steps


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
    layers = params.critic_probe.feature_layers
    critic = Critic(loaded, constitution, params.critique)
    rows = [(c.prompt, c.response) for c in generated]
    keys = [c.candidate_id for c in generated]
    critic.probe_features(rows[:2], keys[:2], *layers)
    critic_s = _timed(lambda: critic.probe_features(rows, keys, *layers))

    steps, per_step = _train_seconds_per_step(
        params, loaded, _examples(generated), workdir / f"train-{precision}"
    )
    return {
        "weights": str(loaded.model.dtype).removeprefix("torch."),
        "generate_tokens_per_s": round(tokens / generate_s, 2),
        "critic_rows_per_s": round(len(rows) / critic_s, 2),
        "train_steps": steps,
        "train_s_per_step": round(per_step, 3),
    }


def bench_precision(
    params: Params, constitution: Constitution, prompts: list[Prompt], workdir: Path
) -> dict[str, Any]:
    """Rates of both precisions and bfloat16's speed-up over float32 for each kind of work."""
    by_precision: dict[str, dict[str, Any]] = {
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
