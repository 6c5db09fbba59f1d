"""The shared-prefix key/value cache: rows read through it as through one plain forward pass,
and a prefix wanted to some depth never runs the blocks above it."""

from typing import Any

import pytest
import torch
from conftest import ARCHS, Arch, MakeModel, models_params

from minicc.hidden import decoder_layers, hidden_states_at
from minicc.models import load_model
from minicc.prefix_cache import PrefixCache

PREFIX = "You read replies and judge them against the principles below.\nReply:"
SUFFIXES = [" Boil the egg for nine minutes, then cool it.", " No."]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("depth", [1, None])
def test_rows_read_through_the_cache_equal_a_plain_forward_pass(
    make_tiny_model: MakeModel, arch: Arch, depth: int | None
) -> None:
    loaded = load_model(str(make_tiny_model(arch, chat=False)), models_params())
    inputs = PrefixCache(loaded, "shorten it").inputs(PREFIX, SUFFIXES, ["a", "b"], depth)
    with torch.inference_mode():
        hidden = hidden_states_at(loaded.model, 1, **inputs)
        for row, suffix in enumerate(SUFFIXES):
            ids = loaded.tokenizer(PREFIX, return_tensors="pt")["input_ids"]
            rest = loaded.tokenizer(suffix, add_special_tokens=False, return_tensors="pt")
            plain = loaded.model(
                input_ids=torch.cat([ids, rest["input_ids"]], dim=1), output_hidden_states=True
            ).hidden_states[1][0, ids.shape[1] :]
            got = hidden[row, -plain.shape[0] :]  # rows are left-padded
            assert got.numpy() == pytest.approx(plain.numpy(), abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_prefix_wanted_to_a_depth_never_runs_the_blocks_above(
    make_tiny_model: MakeModel, arch: Arch
) -> None:
    loaded = load_model(str(make_tiny_model(arch, chat=False)), models_params())
    runs: list[int] = []

    def count(_module: torch.nn.Module, _inputs: Any, _output: Any) -> None:
        runs.append(2)

    handle = decoder_layers(loaded.model)[1].register_forward_hook(count)
    try:
        cache = PrefixCache(loaded, "shorten it")
        cache.inputs(PREFIX, SUFFIXES, ["a", "b"], depth=1)
        assert runs == []
        cache.inputs(PREFIX, SUFFIXES, ["a", "b"], depth=1)  # computed once per depth
        cache.inputs(PREFIX, SUFFIXES, ["a", "b"])  # every block: the judge reads the logits
        assert runs == [2]
    finally:
        handle.remove()
