"""Turn a request into model input text: chat template for instruct models, plain text otherwise."""

from typing import Any

import torch

from minicc.models import LoadedModel

BASE_MODEL_FRAME = "User: {request}\nAssistant:"
"""How a base (non-instruct) model sees a request: a plain dialogue it can continue."""


def format_request(loaded: LoadedModel, request: str) -> str:
    """The text a model continues to answer `request` as the assistant."""
    if loaded.uses_chat_template:
        messages = [{"role": "user", "content": request}]
        text: str = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return text
    return BASE_MODEL_FRAME.format(request=request)


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
