"""SFT encoding (assistant-only loss, the generation prompt exactly) and the training loop."""

import pytest
import torch
from accelerate import Accelerator
from conftest import MakeModel, models_params, train_params

from minicc.errors import UserError
from minicc.lora import add_lora, all_linear_modules
from minicc.models import LoadedModel, load_model
from minicc.prompting import encode_batch, format_request
from minicc.sft import SftExample
from minicc.training import IGNORE, collate, encode_example, fit


def example(prompt: str, answer: str, key: str = "p1/0") -> SftExample:
    return SftExample(
        prompt_id=key.split("/")[0],
        category="cooperative",
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        score=4.0,
        candidate_id=key,
    )


def test_loss_covers_only_the_answer_and_its_eos(tiny_llama: LoadedModel) -> None:
    encoded = encode_example(tiny_llama, example("How do I boil an egg?", "Put it in water."), 128)
    prompt_ids = encode_batch(tiny_llama, [format_request(tiny_llama, "How do I boil an egg?")])
    prompt = prompt_ids["input_ids"][0].tolist()
    answer = tiny_llama.tokenizer("Put it in water.", add_special_tokens=False)["input_ids"]
    eos = tiny_llama.tokenizer.eos_token_id
    # The prompt part is token for token what generation feeds the model.
    assert encoded.input_ids == prompt + answer + [eos]
    assert encoded.labels == [IGNORE] * len(prompt) + answer + [eos]
    assert not encoded.truncated


def test_a_long_answer_is_cut_and_counted(tiny_llama: LoadedModel) -> None:
    short = encode_example(tiny_llama, example("Hi", "the cat " * 5), 1000)
    cut = encode_example(tiny_llama, example("Hi", "the cat " * 5), len(short.input_ids) - 3)
    assert cut.truncated
    assert cut.input_ids == short.input_ids[:-3]
    assert cut.labels == short.labels[:-3]


def test_a_prompt_longer_than_max_seq_len_is_an_error(tiny_llama: LoadedModel) -> None:
    with pytest.raises(UserError, match="raise train.max_seq_len"):
        encode_example(tiny_llama, example("the cat " * 50, "ok"), 32)


def test_messages_must_be_user_then_assistant(tiny_llama: LoadedModel) -> None:
    reversed_turns = SftExample(
        "p1", "cooperative", [{"role": "assistant", "content": "x"}], 4.0, "p1/0"
    )
    with pytest.raises(UserError, match="user turn then an assistant turn"):
        encode_example(tiny_llama, reversed_turns, 64)


def test_collate_pads_right_and_hides_padding_from_the_loss(tiny_llama: LoadedModel) -> None:
    a = encode_example(tiny_llama, example("Hi", "ok"), 64)
    b = encode_example(tiny_llama, example("How do I boil an egg?", "Put it in water."), 64)
    batch = collate([a, b], pad_id=0)
    width = len(b.input_ids)
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"][0].tolist() == [1] * len(a.input_ids) + [0] * (
        width - len(a.input_ids)
    )
    assert batch["labels"][0, len(a.input_ids) :].eq(IGNORE).all()


def test_lora_lowers_the_training_loss(make_tiny_model: MakeModel) -> None:
    loaded = load_model(str(make_tiny_model("llama")), models_params())
    torch.manual_seed(0)
    model = add_lora(loaded.model, train_params(lora_r=8), all_linear_modules(loaded.model))
    data = [
        encode_example(loaded, example(f"Question {i}?", "I can't help with that.", f"p{i}/0"), 64)
        for i in range(4)
    ]
    params = train_params(epochs=8, lr=5e-2, batch_size=2, grad_accum=2, scheduler="cosine")
    accelerator = Accelerator(gradient_accumulation_steps=params.grad_accum, cpu=True)
    _, result = fit(accelerator, model, data, data, params, pad_id=0, seed=1)
    assert result.steps == 8  # 2 batches per epoch, 2 per optimizer step
    assert [step for step, _ in result.step_losses] == list(range(1, 9))
    # A random tiny model's frozen head (weights ~0.02, width 32) keeps every logit within about
    # +-0.7, so the loss cannot fall far below ln(512) = 6.24; 0.2 is a clear, seeded drop.
    assert result.val_loss < result.val_loss_before - 0.2
    assert result.step_losses[-1][1] < result.step_losses[0][1]
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
