"""LoRA target modules, and adapters that survive a save and reload unchanged (tiny models)."""

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ARCHS, MakeModel, models_params, train_params
from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, Qwen2Config

from minicc.errors import UserError
from minicc.lora import (
    COMPLETE_MARKER,
    add_lora,
    all_linear_modules,
    apply_adapter,
    resolve_target_modules,
    save_adapter,
)
from minicc.models import LoadedModel, load_model

EXPECTED = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
}


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_picks_the_attention_projections(arch: str, make_tiny_model: MakeModel) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(arch))
    targets = resolve_target_modules(model, "auto")
    assert targets == EXPECTED[arch]
    wrapped = add_lora(model, train_params(), targets)
    adapted = {name.rsplit(".", 2)[-2] for name, _ in wrapped.named_modules() if "lora_A" in name}
    assert adapted >= set(EXPECTED[arch])


GROUPED_ATTENTION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
}
"""A tiny decoder with grouped-query attention, as Qwen2 and Gemma 3 configs spell it."""


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # GPT-2's MLP has a `c_proj` too: it must not get an adapter.
        (GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64), {"attn.c_attn", "attn.c_proj"}),
        (
            Qwen2Config(**GROUPED_ATTENTION),
            {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"},
        ),
        # The bundled Gemma 3 270M's type (`auto` gave it every linear module before it was listed).
        (
            Gemma3TextConfig(**GROUPED_ATTENTION, head_dim=8),
            {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"},
        ),
    ],
    ids=["gpt2", "qwen2", "gemma3_text"],
)
def test_auto_adapts_the_attention_projections_only(config: Any, expected: set[str]) -> None:
    model = AutoModelForCausalLM.from_config(config)
    wrapped = add_lora(model, train_params(), resolve_target_modules(model, "auto"))
    adapted = {
        ".".join(name.split(".")[-3:-1])
        for name, _ in wrapped.named_modules()
        if name.endswith("lora_A")
    }
    assert adapted == expected


def test_auto_falls_back_to_every_linear_layer_but_the_head(make_tiny_model: MakeModel) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama"))
    model.config.model_type = "some_new_arch"
    targets = resolve_target_modules(model, "auto")
    assert targets == all_linear_modules(model)
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"} | {
        "down_proj"
    }


def test_a_listed_module_the_model_lacks_is_refused(make_tiny_model: MakeModel) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama"))
    assert resolve_target_modules(model, ["q_proj"]) == ["q_proj"]
    with pytest.raises(UserError, match=r"train.target_modules names \['c_attn'\]"):
        resolve_target_modules(model, ["q_proj", "c_attn"])


def _perturbed_lora(make_tiny_model: MakeModel) -> tuple[LoadedModel, Any]:
    """A tiny llama with a LoRA whose B matrices are non-zero (so the adapter matters)."""
    loaded = load_model(str(make_tiny_model("llama")), models_params())
    peft_model = add_lora(loaded.model, train_params(), ["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.eval()
    return loaded, peft_model


def test_saved_and_reloaded_adapter_gives_the_same_logits(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    loaded, peft_model = _perturbed_lora(make_tiny_model)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    out = tmp_path / "lora"
    save_adapter(peft_model, loaded.tokenizer, {"base_model": loaded.model_id}, out)
    assert (out / COMPLETE_MARKER).is_file()
    assert not out.with_name("lora.partial").exists()

    fresh = load_model(str(make_tiny_model("llama")), models_params())
    with torch.no_grad():
        base_logits = fresh.model(input_ids=ids).logits
    tuned = apply_adapter(fresh, out)
    with torch.no_grad():
        reloaded = tuned.model(input_ids=ids).logits
    assert not torch.allclose(base_logits, expected, atol=1e-3)
    torch.testing.assert_close(reloaded, expected, atol=1e-5, rtol=1e-5)
    assert tuned.model_id.startswith(fresh.model_id + "+lora:")


def test_an_adapter_of_another_base_or_without_its_marker_is_refused(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    loaded, peft_model = _perturbed_lora(make_tiny_model)
    out = tmp_path / "lora"
    save_adapter(peft_model, loaded.tokenizer, {"base_model": "other-model"}, out)
    fresh = load_model(str(make_tiny_model("llama")), models_params())
    with pytest.raises(UserError, match="trained on 'other-model'"):
        apply_adapter(fresh, out)
    (out / COMPLETE_MARKER).unlink()
    with pytest.raises(UserError, match="no COMPLETE marker"):
        apply_adapter(fresh, out)


def test_an_adapter_on_a_bfloat16_base_stays_unmerged_in_float32(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """Merged into bfloat16 weights, an update below their rounding step would vanish; kept
    beside them in float32, it still changes the output."""
    loaded, peft_model = _perturbed_lora(make_tiny_model)
    save_adapter(peft_model, loaded.tokenizer, {"base_model": loaded.model_id}, tmp_path / "a")
    half = load_model(str(make_tiny_model("llama")), models_params(dtype="bfloat16"))
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base_logits = half.model(input_ids=ids).logits
    tuned = apply_adapter(half, tmp_path / "a")
    adapter = {n: p.dtype for n, p in tuned.model.named_parameters() if "lora_" in n}
    base = {n: p.dtype for n, p in tuned.model.named_parameters() if "lora_" not in n}
    assert adapter and set(adapter.values()) == {torch.float32}
    assert set(base.values()) == {torch.bfloat16}
    with torch.no_grad():
        tuned_logits = tuned.model(input_ids=ids).logits
    assert not torch.allclose(tuned_logits.float(), base_logits.float(), atol=1e-2)
