"""Turn a request into model input text: chat template for instruct models, plain text otherwise."""

from dataclasses import dataclass
from typing import Any, Literal

import torch

from minicc.models import LoadedModel

BASE_MODEL_FRAME = "User: {request}\nAssistant:"
"""How a base (non-instruct) model sees a request: a plain dialogue it can continue."""
BASE_MODEL_REQUEST_STOP = "\nUser:"
"""A base model has no end-of-turn token: having answered, it goes on to write the user's next
line of the dialogue. Its answer ends there."""
BASE_MODEL_DIALOGUE_STOP = "\n\n"
"""In a plain-text dialogue (format_dialogue) every turn is one paragraph, the few-shot
examples' included, so a base model's turn ends at its first blank line."""


def format_request(loaded: LoadedModel, request: str, system: str | None = None) -> str:
    """The text a model continues to answer `request` as the assistant.

    `system` (e.g. the constitution) becomes the system message of a chat model; a base model
    has none, so it reads the text as a plain preamble before the dialogue.
    """
    if loaded.uses_chat_template:
        messages = [{"role": "user", "content": request}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return _chat_text(loaded, messages)
    frame = BASE_MODEL_FRAME.format(request=request)
    return frame if system is None else f"{system}\n\n{frame}"


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    label: str = ""
    """A base model sees an assistant turn as `<label>: <text>` (e.g. "Critique")."""


def request_stops(loaded: LoadedModel) -> tuple[str, ...]:
    """Texts that end an answer to a `format_request` input: none for a chat model, whose
    template gives it an end-of-turn token."""
    return () if loaded.uses_chat_template else (BASE_MODEL_REQUEST_STOP,)


def dialogue_stops(loaded: LoadedModel) -> tuple[str, ...]:
    """Texts that end a turn of a `format_dialogue` input (see BASE_MODEL_DIALOGUE_STOP)."""
    return () if loaded.uses_chat_template else (BASE_MODEL_DIALOGUE_STOP,)


def format_dialogue(
    loaded: LoadedModel, turns: list[Turn], answer_label: str, opening: str = ""
) -> str:
    """The text a model continues to write the next assistant turn after `turns`.

    Chat models get the turns as chat messages; a base model gets them as plain paragraphs,
    each assistant turn under its label, ending with `answer_label:` to continue. A non-empty
    `opening` starts the new turn (after the label's space, as in the turns before it).
    """
    if loaded.uses_chat_template:
        messages = [{"role": t.role, "content": t.text} for t in turns]
        return _chat_text(loaded, messages) + opening
    paragraphs = [f"{t.label}: {t.text}" if t.role == "assistant" else t.text for t in turns]
    answer = f"{answer_label}: {opening}" if opening else f"{answer_label}:"
    return "\n\n".join([*paragraphs, answer])


def _chat_text(loaded: LoadedModel, messages: list[dict[str, str]]) -> str:
    text: str = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    return text


def encode_batch(loaded: LoadedModel, texts: list[str]) -> dict[str, torch.Tensor]:
    """Tokenize a left-padded batch and move it to the model's device.

    A chat template already writes the special tokens the model expects, so the tokenizer must
    not add them a second time; plain text gets the tokenizer's usual BOS handling.
    """
    encoded: Any = loaded.tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        add_special_tokens=not loaded.uses_chat_template,
    )
    return {name: tensor.to(loaded.device) for name, tensor in encoded.items()}
