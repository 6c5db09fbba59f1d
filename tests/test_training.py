"""TRL's training data: the prompt exactly as generation sees it, loss on the answer only."""

import dataclasses
import warnings
from pathlib import Path

import pytest
from conftest import MakeModel, models_params, train_params
from datasets import Dataset

from minicc.errors import UserError
from minicc.lora import add_lora, all_linear_modules
from minicc.models import LoadedModel, load_model
from minicc.prompting import encode_batch, format_request
from minicc.records import PreferencePair
from minicc.sft import SftExample
from minicc.trainers import PhaseResult, loss_csv, sft_trainer
from minicc.training import (
    completion_text,
    dpo_dataset,
    require_rows,
    sft_dataset,
    training_prompt,
)

IGNORE = -100


def example(prompt: str, answer: str, key: str = "p1/0", ends_turn: bool = True) -> SftExample:
    return SftExample(
        prompt_id=key.split("/")[0],
        category="cooperative",
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        score=4.0,
        candidate_id=key,
        finish_reason="eos" if ends_turn else "length",
        trimmed=None,
        ends_turn=ends_turn,
    )


def prepared_row(loaded: LoadedModel, row: SftExample, tmp_path: Path) -> dict[str, list[int]]:
    """The first row as SFTTrainer tokenizes and labels it."""
    data = sft_dataset(loaded, [row], 128).dataset
    model = add_lora(loaded.model, train_params(), all_linear_modules(loaded.model))
    trainer = sft_trainer(
        model, loaded.tokenizer, data, data, train_params(), phase_dir=tmp_path, seed=0
    )
    assert isinstance(trainer.train_dataset, Dataset)
    prepared: dict[str, list[int]] = trainer.train_dataset[0]
    model.unload()  # the session's model stays as it was
    return prepared


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "base-model"])
@pytest.mark.parametrize("ends_turn", [True, False], ids=["whole-reply", "cut-by-budget"])
def test_trl_trains_on_the_generation_prompt_with_loss_on_the_answer_and_eos(
    chat: bool, ends_turn: bool, make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    loaded = load_model(str(make_tiny_model("llama", chat=chat)), models_params())
    request, answer = "How do I boil an egg?", "Put it in water."
    row = prepared_row(loaded, example(request, answer, ends_turn=ends_turn), tmp_path)
    prompt = encode_batch(loaded, [format_request(loaded, request)])["input_ids"][0].tolist()
    tokenizer = loaded.tokenizer
    answer_ids = tokenizer(completion_text(loaded, answer), add_special_tokens=False)["input_ids"]
    # A reply the token budget cut trains without the EOS: the fine-tune must not learn to end
    # its turn mid-sentence.
    end = [tokenizer.eos_token_id] if ends_turn else []
    # The prompt part is token for token what generation feeds the model: the chat template
    # applied once (not again by TRL), and no second BOS.
    assert row["input_ids"] == prompt + answer_ids + end
    assert row["labels"] == [IGNORE] * len(prompt) + answer_ids + end


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "base-model"])
def test_a_whole_reply_is_prepared_as_trl_prepares_its_text(
    chat: bool, make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """The rows tokenized here are the ones TRL makes of prompt/completion text itself."""
    loaded = load_model(str(make_tiny_model("llama", chat=chat)), models_params())
    rows = [example("How do I boil an egg?", "Put it in water."), example("Hi", " Hello there")]
    ours = sft_dataset(loaded, rows, 128).dataset
    text = Dataset.from_list(
        [
            {
                "prompt": training_prompt(loaded, row.messages[0]["content"]),
                "completion": completion_text(loaded, row.messages[1]["content"]),
            }
            for row in rows
        ]
    )
    model = add_lora(loaded.model, train_params(), all_linear_modules(loaded.model))
    prepared = [
        sft_trainer(model, loaded.tokenizer, data, data, train_params(), phase_dir=tmp_path, seed=0)
        for data in (ours, text)
    ]
    model.unload()
    ours_rows, trl_rows = (trainer.train_dataset for trainer in prepared)
    for column in ("input_ids", "labels"):
        assert ours_rows[column] == trl_rows[column]


def test_the_trainer_checkpoints_no_activations_without_a_deprecation_warning(
    tiny_llama: LoadedModel, tmp_path: Path
) -> None:
    """TRL's configs default gradient checkpointing to on, under the name transformers now
    deprecates; the trainer turns it off under the new name, so nothing warns and nothing
    recomputes activations (it would slow a CPU run and change the numbers)."""
    data = sft_dataset(tiny_llama, [example("What is 2 + 2?", "4.")], 128).dataset
    model = add_lora(tiny_llama.model, train_params(), all_linear_modules(tiny_llama.model))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*checkpointing.*", category=FutureWarning)
        trainer = sft_trainer(
            model, tiny_llama.tokenizer, data, data, train_params(), phase_dir=tmp_path, seed=0
        )
    model.unload()
    assert trainer.args.activation_checkpointing is False
    assert trainer.args.gradient_checkpointing is False


def test_a_tokenizer_that_adds_a_bos_does_not_get_it_twice(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer.__class__.from_pretrained(tiny_llama.tokenizer.name_or_path)
    tokenizer.bos_token = "<|im_start|>"
    tokenizer.add_bos_token = True
    tokenizer.update_post_processor()
    with_bos = dataclasses.replace(tiny_llama, tokenizer=tokenizer)
    text = format_request(with_bos, "Hi")
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id, "the tokenizer adds a BOS"
    prompt = training_prompt(with_bos, "Hi")
    assert tokenizer(prompt)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_long_answer_is_counted_as_truncated(tiny_llama: LoadedModel) -> None:
    rows = [example("Hi", "the cat " * 40, "p1/0"), example("Hi", "ok", "p2/0")]
    assert sft_dataset(tiny_llama, rows, 1000).truncated == 0
    assert sft_dataset(tiny_llama, rows, 40).truncated == 1


def test_a_prompt_longer_than_max_seq_len_is_an_error(tiny_llama: LoadedModel) -> None:
    with pytest.raises(UserError, match="raise train.max_seq_len"):
        sft_dataset(tiny_llama, [example("the cat " * 50, "ok")], 32)


def test_messages_must_be_user_then_assistant(tiny_llama: LoadedModel) -> None:
    reversed_turns = SftExample(
        "p1", "cooperative", [{"role": "assistant", "content": "x"}], 4.0, "p1/0", "eos", None, True
    )
    with pytest.raises(UserError, match="user turn then an assistant turn"):
        sft_dataset(tiny_llama, [reversed_turns], 64)


def test_dpo_rows_share_the_generation_prompt(tiny_llama: LoadedModel) -> None:
    pair = PreferencePair(
        prompt="How do I boil an egg?",
        chosen="Put it in water.",
        rejected="No.",
        prompt_id="p1",
        category="cooperative",
        chosen_id="p1/0",
        rejected_id="p1/1",
        chosen_score=4.0,
        rejected_score=2.0,
    )
    row = dpo_dataset(tiny_llama, [pair], 128).dataset[0]
    assert row == {
        "prompt": format_request(tiny_llama, pair.prompt),
        "chosen": pair.chosen,
        "rejected": pair.rejected,
    }


def test_an_empty_file_is_an_error_naming_it_and_what_needs_it() -> None:
    with pytest.raises(UserError, match=r"pairs\.jsonl: no examples, and train\.method=dpo"):
        require_rows([], Path("pairs.jsonl"), "train.method=dpo")


def test_loss_csv_numbers_a_later_phase_on() -> None:
    def phase(losses: list[float]) -> PhaseResult:
        steps = list(enumerate(losses, start=1))
        return PhaseResult(
            model=None, step_losses=steps, resumed_from_step=0, eval_before={}, eval_after={}
        )

    text = loss_csv([phase([2.0, 1.5]), phase([0.69, 0.6])])
    assert text == "step,loss\n1,2.0000\n2,1.5000\n3,0.6900\n4,0.6000\n"
