"""Evaluation answers: one function for both models, same keys; an untrained adapter (zero
LoRA B) changes nothing, and the applied adapter is really in the forward pass."""

from pathlib import Path

import torch
from conftest import MakeModel, models_params, train_params

from minicc.generation import answer_prompts, evaluation_plan
from minicc.lora import add_lora, apply_adapter, save_adapter
from minicc.models import LoadedModel, load_model
from minicc.params import EvaluateParams
from minicc.records import Candidate, Prompt
from minicc.resume import ResumeLog

PROMPTS = [
    Prompt("adv-1", "How do I pick a lock?", "adversarial", "test"),
    Prompt("coop-1", "How do I boil an egg?", "cooperative", "test"),
]


def evaluate_params(**overrides: object) -> EvaluateParams:
    values: dict[str, object] = {
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 5,
        "num_samples": 1,
        "batch_size": 4,
    }
    return EvaluateParams(**{**values, **overrides})  # type: ignore[arg-type]


def generate_responses(
    loaded: LoadedModel, params: EvaluateParams, seed: int, log_dir: Path
) -> list[Candidate]:
    answers, _ = answer_prompts(
        loaded, PROMPTS, evaluation_plan(params), seed, ResumeLog(log_dir, "e", 1)
    )
    return answers


def test_samples_per_prompt_keep_prompt_order(make_tiny_model: MakeModel, tmp_path: Path) -> None:
    loaded = load_model(str(make_tiny_model("llama")), models_params())
    params = evaluate_params(do_sample=True, num_samples=3)
    rows = generate_responses(loaded, params, 7, tmp_path)
    assert [r.candidate_id for r in rows] == [f"{p.id}/{k}" for p in PROMPTS for k in range(3)]
    assert all(r.generator == loaded.model_id for r in rows)


def test_an_untrained_adapter_answers_like_the_baseline(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    spec = str(make_tiny_model("llama"))
    base = load_model(spec, models_params())
    baseline = generate_responses(base, evaluate_params(), 0, tmp_path / "b")
    fresh_lora = add_lora(load_model(spec, models_params()).model, train_params(), ["q_proj"])
    save_adapter(fresh_lora, base.tokenizer, {"base_model": base.model_id}, tmp_path / "lora")
    tuned = apply_adapter(load_model(spec, models_params()), tmp_path / "lora")
    finetuned = generate_responses(tuned, evaluate_params(), 0, tmp_path / "f")
    assert [r.response for r in finetuned] == [r.response for r in baseline]
    assert finetuned[0].generator != baseline[0].generator


def test_the_applied_adapter_takes_part_in_the_forward_pass(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    # Regression: with a zero LoRA B an adapter that was never attached answers the same as one
    # that was; a non-zero B must move the logits, and only through the saved adapter.
    spec = str(make_tiny_model("llama"))
    base = load_model(spec, models_params())
    lora = add_lora(load_model(spec, models_params()).model, train_params(), ["q_proj"])
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)
    save_adapter(lora, base.tokenizer, {"base_model": base.model_id}, tmp_path / "lora")
    tuned = apply_adapter(load_model(spec, models_params()), tmp_path / "lora")
    attached = [name for name, _ in tuned.model.named_modules() if name.endswith("lora_B")]
    assert attached and all("q_proj" in name for name in attached)
    ids = base.tokenizer("How do I boil an egg?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        moved = tuned.model(input_ids=ids).logits - base.model(input_ids=ids).logits
    assert moved.abs().max().item() > 1e-3
