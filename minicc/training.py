"""What TRL trains on: the base model (QLoRA included) and the SFT and DPO data sets.

The prompt is `format_request`'s text, so the chat template is applied once, here, exactly as
generation applies it: TRL applies a chat template only to conversational data (lists of
messages), never to text. DPO's data are TRL's plain-text prompt/chosen/rejected format; TRL
appends the EOS token to each reply and tokenizes prompt + reply with the tokenizer's default
special tokens, and `training_prompt` checks that the prompt's tokens are then the very ids
generation feeds the model. SFT's rows are tokenized here the same way, as TRL's prepared
prompt/completion rows (`input_ids` and `completion_mask`), because TRL would append the EOS to
every completion, and a reply the token budget cut may train without it (`sft.cut_replies: open`,
`SftExample.ends_turn`). SFT's loss covers the completion (the answer, and its EOS where the
turn ends) only.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl.data_utils import common_prefix_length

from minicc.errors import UserError
from minicc.models import LoadedModel, load_model, pick_dtype
from minicc.params import ModelsParams
from minicc.prompting import format_request
from minicc.records import PreferencePair
from minicc.sft import SftExample


def load_base_for_training(
    spec: str, params: ModelsParams, quantize_4bit: bool, device: torch.device
) -> LoadedModel:
    """The generator's base model on this process's `device`; with `quantize_4bit`, frozen in
    4-bit NF4 for QLoRA, computing in the `models.dtype` precision.

    bitsandbytes is optional: it is imported only here, and only when asked for. Its CPU
    backend works too; the tests use it.
    """
    if not quantize_4bit:
        return load_model(spec, params, device=device)
    if device.type not in ("cuda", "cpu") or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "train.quantize_4bit needs `pip install bitsandbytes` and a CUDA GPU (or the CPU); "
            "set it to false to train in full precision"
        )
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=pick_dtype(device, params.dtype),
    )
    loaded = load_model(spec, params, device=device, quantization=quantization)
    # Keeps the norms in float32 and lets gradients reach the adapters through frozen layers,
    # with non-reentrant checkpointing (the kind DDP accepts).
    loaded.model = prepare_model_for_kbit_training(
        loaded.model, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    return loaded


def base_precision(model: Any) -> str:
    """How the frozen base weights are held, for the metrics: `nf4` (QLoRA) or a float dtype."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "nf4"
    return str(model.dtype).removeprefix("torch.")


def require_rows(rows: list[Any], path: Path, needed_by: str) -> None:
    """An empty training file is an error that names the file and what needs it."""
    if not rows:
        raise UserError(
            f"{path}: no examples, and {needed_by} needs them; rerun build_sft (lower "
            "sft.min_score or select more) or choose another train.method"
        )


def training_prompt(loaded: LoadedModel, request: str) -> str:
    """`format_request`'s text, checked to tokenize as TRL does to generation's very ids.

    Generation tokenizes a chat template's text without the tokenizer's own special tokens (the
    template writes them); TRL tokenizes text with them. A tokenizer that adds a BOS would
    give it twice, so its text is taken off the front of the prompt.
    """
    tokenizer = loaded.tokenizer
    text = format_request(loaded, request)
    expected = tokenizer(text, add_special_tokens=not loaded.uses_chat_template)["input_ids"]
    if loaded.uses_chat_template:
        text = text.removeprefix(tokenizer.decode(tokenizer("")["input_ids"]))
    if tokenizer(text)["input_ids"] != expected:
        raise UserError(
            f"the tokenizer of {loaded.model_id!r} adds special tokens that its chat template "
            "does not write, so training would not see the prompt generation sees"
        )
    return text


def completion_text(loaded: LoadedModel, answer: str) -> str:
    # A base model's frame ends with "Assistant:"; its answers follow after a space.
    return answer if loaded.uses_chat_template else " " + answer


@dataclass(frozen=True)
class TrainingSet:
    dataset: Dataset
    truncated: int
    """Rows whose prompt and completion exceed `train.max_seq_len` tokens: they lose the end
    of the completion (and its EOS)."""


def _prompt_ids(loaded: LoadedModel, prompt: str, max_seq_len: int, row: str) -> list[int]:
    """The prompt's tokens; a prompt that leaves no room for an answer is an error."""
    ids: list[int] = loaded.tokenizer(prompt)["input_ids"]
    if len(ids) >= max_seq_len:
        raise UserError(
            f"{row}: the prompt alone is {len(ids)} tokens, not less than "
            f"train.max_seq_len={max_seq_len}; raise train.max_seq_len"
        )
    return ids


def _length_check(
    loaded: LoadedModel, prompt: str, completions: list[str], max_seq_len: int, row: str
) -> bool:
    """Whether the row is truncated (TRL appends the EOS to each completion)."""
    _prompt_ids(loaded, prompt, max_seq_len, row)
    eos = loaded.tokenizer.eos_token
    return any(
        len(loaded.tokenizer(prompt + text + eos)["input_ids"]) > max_seq_len
        for text in completions
    )


def _sft_row(loaded: LoadedModel, example: SftExample, max_seq_len: int) -> dict[str, list[int]]:
    """The row TRL's SFTTrainer makes of prompt/completion text (the same tokenization, the
    completion from where the two token lists part), with the EOS only where the turn ends."""
    row = f"SFT example {example.candidate_id!r}"
    prompt = training_prompt(loaded, example.request)
    prompt_ids = _prompt_ids(loaded, prompt, max_seq_len, row)
    end = loaded.tokenizer.eos_token if example.ends_turn else ""
    text = prompt + completion_text(loaded, example.reply) + end
    ids: list[int] = loaded.tokenizer(text)["input_ids"]
    start = common_prefix_length(prompt_ids, ids)
    return {"input_ids": ids, "completion_mask": [0] * start + [1] * (len(ids) - start)}


def _require_eos(loaded: LoadedModel) -> None:
    if loaded.tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of {loaded.model_id!r} has no EOS token to end answers")


def sft_dataset(loaded: LoadedModel, examples: list[SftExample], max_seq_len: int) -> TrainingSet:
    """TRL's prepared prompt/completion data set of the SFT examples (see the module's doc)."""
    _require_eos(loaded)
    rows = []
    for example in examples:
        roles = [message.get("role") for message in example.messages]
        if roles != ["user", "assistant"]:
            raise UserError(
                f"SFT example {example.candidate_id!r}: messages must be a user turn then an "
                f"assistant turn, got roles {roles}; rebuild it with the build_sft stage"
            )
        rows.append(_sft_row(loaded, example, max_seq_len))
    truncated = sum(len(row["input_ids"]) > max_seq_len for row in rows)
    return TrainingSet(Dataset.from_list(rows), truncated)


def dpo_dataset(loaded: LoadedModel, pairs: list[PreferencePair], max_seq_len: int) -> TrainingSet:
    """TRL's prompt/chosen/rejected data set of the preference pairs."""
    _require_eos(loaded)
    rows, truncated = [], 0
    for pair in pairs:
        prompt = training_prompt(loaded, pair.prompt)
        chosen = completion_text(loaded, pair.chosen)
        rejected = completion_text(loaded, pair.rejected)
        row = f"preference pair {pair.chosen_id!r} > {pair.rejected_id!r}"
        truncated += _length_check(loaded, prompt, [chosen, rejected], max_seq_len, row)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return TrainingSet(Dataset.from_list(rows), truncated)
