"""LoRA adapters: which modules get one, and how an adapter is saved and put back on its base.

An adapter directory (`models/lora-sft/`) holds peft's `adapter_config.json` and weights, the
tokenizer, `train_config.json` (the resolved training configuration, base model id included)
and a `COMPLETE` marker written last. It is built in a sibling `.partial` directory and renamed
into place, so a crash never leaves a directory that mixes two runs; a directory without the
marker is refused by `apply_adapter`.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from minicc.errors import UserError
from minicc.jsonl import atomic_write_text, publish_directory, write_json
from minicc.models import LoadedModel
from minicc.params import TrainParams

COMPLETE_MARKER = "COMPLETE"
TRAINED_ADAPTER = "default"
"""peft's name of the adapter that training creates and updates."""
TRAIN_CONFIG = "train_config.json"
_WEIGHTS = "adapter_model.safetensors"

_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ATTENTION_PROJECTIONS: dict[str, list[str]] = {
    "llama": _ATTENTION,
    "mistral": _ATTENTION,
    "gemma": _ATTENTION,
    "gemma2": _ATTENTION,
    "gemma3_text": _ATTENTION,  # Gemma 3 270M and 1B: text-only, their own model type
    "qwen2": _ATTENTION,
    "qwen3": _ATTENTION,
    # GPT-Neo keeps its projections under `attn.attention`; the output one is `out_proj`.
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    # GPT-2 uses fused Conv1D layers (peft handles their transposed weights); its MLP has a
    # `c_proj` too, so the names say which block they are in.
    "gpt2": ["attn.c_attn", "attn.c_proj"],
}
"""The attention projections of each architecture (`config.model_type`) that `auto` picks,
as peft's `target_modules` reads them: a name matches every module whose dotted name ends
with it."""


def _module_names(model: nn.Module) -> set[str]:
    """Every dotted ending of every module name: what a `target_modules` entry can match."""
    names: set[str] = set()
    for name, _ in model.named_modules():
        parts = name.split(".") if name else []
        names.update(".".join(parts[start:]) for start in range(len(parts)))
    return names


def all_linear_modules(model: nn.Module) -> list[str]:
    """Names of every `nn.Linear` except the output head, as peft's `target_modules` reads them."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"
        }
    )


def resolve_target_modules(model: nn.Module, setting: str | list[str]) -> list[str]:
    """The module names that get a LoRA adapter for `train.target_modules`.

    `auto`: the architecture's attention projections when the model has them all, otherwise
    every linear layer except `lm_head`. A list must name modules that exist.
    """
    present = _module_names(model)
    if isinstance(setting, list):
        missing = sorted(set(setting) - present)
        if missing:
            raise UserError(
                f"train.target_modules names {missing}, which the model does not have; use "
                f"'auto' or names from: {', '.join(all_linear_modules(model))}"
            )
        return list(setting)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = ATTENTION_PROJECTIONS.get(str(model_type))
    if known is not None and set(known) <= present:
        return list(known)
    return all_linear_modules(model)


def lora_config(params: TrainParams, target_modules: list[str]) -> LoraConfig:
    """peft's LoRA configuration from the `train` params."""
    return LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: nn.Module, params: TrainParams, target_modules: list[str]) -> Any:
    """Wrap `model` with fresh LoRA adapters (random A, zero B: the output is unchanged)."""
    return get_peft_model(model, lora_config(params, target_modules))


def _sort_target_modules(config_path: Path) -> None:
    """peft writes `target_modules` from a set, in an order that changes between processes;
    sorted, identical runs give byte-identical adapters and DVC does not rerun evaluation."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_adapter(peft_model: Any, tokenizer: Any, config: dict[str, Any], out: Path) -> None:
    """Write the trained adapter, tokenizer and config to `out` atomically, the marker last.

    Only the `default` adapter is saved: DPO after SFT adds a frozen `ref` copy for its
    reference model, which is no part of the result.
    """

    def write(staging: Path) -> str:
        peft_model.save_pretrained(staging, selected_adapters=[TRAINED_ADAPTER])
        _sort_target_modules(staging / "adapter_config.json")
        tokenizer.save_pretrained(staging)
        write_json(staging / TRAIN_CONFIG, config)
        return adapter_digest(staging)

    publish_directory(out, COMPLETE_MARKER, write)


def adapter_digest(directory: Path) -> str:
    """First 12 hex digits of the adapter weights' SHA-256: names the fine-tuned model."""
    return hashlib.sha256((directory / _WEIGHTS).read_bytes()).hexdigest()[:12]


def apply_adapter(loaded: LoadedModel, adapter: Path) -> LoadedModel:
    """`loaded` with the adapter on top, ready for the same generation code.

    The adapter must be complete and trained on this very base model. It is kept beside the
    base weights rather than merged into them: merged into bfloat16 weights, an update smaller
    than their rounding step (most of a short fine-tune's) would be rounded away, while peft
    adds the adapter's output computed in its own float32 weights.
    """
    if not (adapter / COMPLETE_MARKER).is_file():
        raise UserError(
            f"{adapter}: no {COMPLETE_MARKER} marker, so training did not finish; rerun "
            "`dvc repro train_lora`"
        )
    config = json.loads((adapter / TRAIN_CONFIG).read_text(encoding="utf-8"))
    if config["base_model"] != loaded.model_id:
        raise UserError(
            f"{adapter} was trained on {config['base_model']!r}, not on models.generator "
            f"{loaded.model_id!r}; rerun `dvc repro train_lora`"
        )
    tuned = PeftModel.from_pretrained(loaded.model, adapter)
    tuned.eval()
    model_id = f"{loaded.model_id}+lora:{adapter_digest(adapter)}"
    return dataclasses.replace(loaded, model=tuned, model_id=model_id)
