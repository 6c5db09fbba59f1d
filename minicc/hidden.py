"""Hidden states of a causal LM at one decoder layer, without running the layers above it.

A probe reads an intermediate layer (the middle of the network separates harmful from harmless
replies better than the last one), so the forward pass stops there: for the bundled 30-layer
model and layer 14 that halves the work. Works for any architecture whose decoder layers sit
in one `ModuleList` of `config.num_hidden_layers` blocks (Llama, Gemma, Qwen, Phi, GPT-Neo,
GPT-2, ...).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _Reached(Exception):
    """Raised by the hook to leave forward() once the wanted layer has run."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder blocks."""
    count = getattr(model.config, "num_hidden_layers", None)
    stacks = [
        module
        for module in model.modules()
        if isinstance(module, nn.ModuleList) and len(module) == count
    ]
    if len(stacks) != 1:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: expected one ModuleList "
            f"of num_hidden_layers={count} blocks, found {len(stacks)}"
        )
    return stacks[0]


@contextmanager
def _stop_after(block: nn.Module) -> Iterator[None]:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        raise _Reached(output[0] if isinstance(output, tuple) else output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def hidden_states_at(model: nn.Module, layer: int, **inputs: Any) -> torch.Tensor:
    """(batch, length, hidden) output of decoder block `layer` (1 = the first block).

    `inputs` are the model's forward() arguments. A key/value cache passed in is left partly
    filled (the blocks above `layer` never ran), so callers must not reuse it.
    """
    layers = decoder_layers(model)
    if not 1 <= layer <= len(layers):
        raise ValueError(f"layer must be in [1, {len(layers)}] for this model, got {layer}")
    with _stop_after(layers[layer - 1]):
        try:
            model(**inputs)
        except _Reached as reached:
            return reached.hidden
    raise RuntimeError(f"forward() finished without running decoder layer {layer}")
