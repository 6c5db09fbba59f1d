"""Model specs, devices and dtypes, on tiny random-weight models saved to local directories."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ARCHS, Arch, MakeModel, build_tokenizer, copy_weights, models_params

from minicc.errors import UserError
from minicc.jsonl import publish_directory
from minicc.models import (
    BUNDLED_MODELS,
    LoadedModel,
    load_model,
    pick_device,
    pick_dtype,
    resolve_model,
)
from minicc.params import Precision
from minicc.prompting import BASE_MODEL_FRAME, encode_batch, format_request

NO_ACCELERATOR = not (torch.cuda.is_available() or torch.backends.mps.is_available())


@pytest.mark.parametrize("arch", ARCHS)
def test_local_directory_loads_for_every_architecture(
    make_tiny_model: MakeModel, arch: Arch
) -> None:
    directory = make_tiny_model(arch)
    loaded = load_model(str(directory), models_params())
    assert loaded.model_id == f"local:{directory.name}"
    assert loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token is not None
    assert loaded.uses_chat_template


def test_model_id_names_the_resolved_directory(make_tiny_model: MakeModel) -> None:
    directory = make_tiny_model("llama")
    spelled_with_dots = directory / ".." / directory.name
    resolved = resolve_model(str(spelled_with_dots), models_params())
    assert resolved.model_id == f"local:{directory.name}"


def test_chat_model_is_prompted_in_chatml(tiny_llama: LoadedModel) -> None:
    assert (
        format_request(tiny_llama, "Hi?")
        == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tokenizer_without_chat_template_is_a_base_model(make_tiny_model: MakeModel) -> None:
    loaded = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    assert not loaded.uses_chat_template
    assert format_request(loaded, "Hi?") == BASE_MODEL_FRAME.format(request="Hi?")


def test_missing_pad_token_falls_back_to_eos(make_tiny_model: MakeModel, tmp_path: Path) -> None:
    directory = copy_weights(make_tiny_model("llama"), tmp_path / "no-pad")
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)
    loaded = load_model(str(directory), models_params())
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    assert loaded.tokenizer.padding_side == "left"


@pytest.mark.skipif(not NO_ACCELERATOR, reason="an accelerator is present on this machine")
def test_auto_device_is_cpu_without_an_accelerator() -> None:
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_unavailable_cuda_is_refused_with_a_hint() -> None:
    with pytest.raises(UserError, match="'auto'") as error:
        pick_device("cuda")
    assert "cuda" in str(error.value)


@pytest.mark.parametrize(
    ("setting", "dtype"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_an_explicit_dtype_is_taken_as_given(setting: Precision, dtype: torch.dtype) -> None:
    assert pick_dtype(torch.device("cpu"), setting) == dtype


@pytest.mark.parametrize(
    ("capabilities", "dtype"),
    [
        ({"avx512_bf16": True, "amx_bf16": False}, torch.bfloat16),
        ({"avx512_bf16": False, "amx_bf16": True}, torch.bfloat16),
        ({"avx512_bf16": False, "amx_bf16": False}, torch.float32),
    ],
)
def test_auto_dtype_is_bfloat16_only_on_a_cpu_that_computes_it_natively(
    capabilities: dict[str, bool], dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert pick_dtype(torch.device("cpu"), "auto") == dtype


def test_auto_dtype_is_float32_on_apple_mps() -> None:
    assert pick_dtype(torch.device("mps"), "auto") == torch.float32


def test_bfloat16_load(make_tiny_model: MakeModel) -> None:
    loaded = load_model(str(make_tiny_model("llama")), models_params(dtype="bfloat16"))
    assert loaded.model.dtype == torch.bfloat16


def test_the_bundled_model_converts_to_plain_float_weights(tmp_path: Path) -> None:
    """Regression: the conversion kept the GGUF quantization entry in config.json, so every
    load was flagged as a quantized model (a warning on each bfloat16 load)."""
    resolved = resolve_model(next(iter(BUNDLED_MODELS)), models_params())
    config = json.loads((Path(resolved.load_from) / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config
    loaded = load_model(next(iter(BUNDLED_MODELS)), models_params(dtype="bfloat16"))
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.model_id.startswith(next(iter(BUNDLED_MODELS)) + "@")


@pytest.mark.timeout(60)
def test_unknown_hub_id_fails_fast_with_the_ways_out() -> None:
    spec = "nobody/does-not-exist-xyz"
    with pytest.raises(UserError) as error:
        load_model(spec, models_params())
    message = str(error.value)
    assert spec in message
    assert "local model directory" in message
    assert next(iter(BUNDLED_MODELS)) in message


def test_hub_id_is_passed_through_unchanged() -> None:
    resolved = resolve_model("someone/tiny-model", models_params())
    assert (resolved.load_from, resolved.model_id) == ("someone/tiny-model", "someone/tiny-model")


@pytest.mark.parametrize("spec", ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "Qwen/Qwen2.5-0.5B"])
def test_hub_id_with_a_dot_is_not_mistaken_for_a_path(spec: str) -> None:
    resolved = resolve_model(spec, models_params())
    assert resolved.load_from == spec


@pytest.mark.parametrize("spec", ["./missing-model", "/nonexistent/model-dir", "weights.gguf"])
def test_missing_path_is_refused(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no such directory") as error:
        resolve_model(spec, models_params())
    assert spec in str(error.value)


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="config.json") as error:
        load_model(str(folder), models_params())
    assert str(folder) in str(error.value)


def test_remote_code_is_trusted_only_when_listed(make_tiny_model: MakeModel) -> None:
    local = str(make_tiny_model("llama"))
    hub = "someone/custom-model"
    plain = models_params()
    listed = models_params(trust_remote_code=[local, hub])
    assert not resolve_model(local, plain).trust_remote_code
    assert not resolve_model(hub, plain).trust_remote_code
    assert resolve_model(local, listed).trust_remote_code
    assert resolve_model(hub, listed).trust_remote_code
    assert not resolve_model("someone/other-model", listed).trust_remote_code


def test_local_directory_without_weights_names_the_directory(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    directory = tmp_path / "no-weights"
    shutil.copytree(make_tiny_model("llama"), directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(UserError) as error:
        load_model(str(directory), models_params())
    message = str(error.value)
    assert "hf download local:" not in message
    assert str(directory) in message


def _without_tokenizer(model_dir: Path, destination: Path) -> Path:
    return copy_weights(model_dir, destination)


def _unknown_model_type(model_dir: Path, destination: Path) -> Path:
    shutil.copytree(model_dir, destination)
    config = json.loads((destination / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "no_such_architecture"
    (destination / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return destination


@pytest.mark.parametrize(
    "breakage",
    [_without_tokenizer, _unknown_model_type],
    ids=["no-tokenizer", "unknown-model-type"],
)
def test_broken_local_directory_is_a_user_error(
    make_tiny_model: MakeModel, tmp_path: Path, breakage: Callable[[Path, Path], Path]
) -> None:
    directory = breakage(make_tiny_model("llama"), tmp_path / "broken")
    with pytest.raises(UserError) as error:
        load_model(str(directory), models_params())
    assert directory.name in str(error.value)


def test_publish_directory_replaces_the_old_one_whole_with_its_marker_last(tmp_path: Path) -> None:
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.bin").write_text("old", encoding="utf-8")
    seen: list[set[str]] = []

    def build(staging: Path) -> str:
        assert staging == tmp_path / "model.partial" and not any(staging.iterdir())
        (staging / "weights.bin").write_text("new", encoding="utf-8")
        seen.append({p.name for p in staging.iterdir()})
        return "digest"

    publish_directory(destination, "DONE", build)
    assert seen == [{"weights.bin"}], "the marker is written after everything build writes"
    assert sorted(p.name for p in destination.iterdir()) == ["DONE", "weights.bin"]
    assert (destination / "DONE").read_text(encoding="utf-8") == "digest\n"
    assert not (tmp_path / "model.partial").exists()


def test_a_failed_build_leaves_the_old_directory_and_no_marker(tmp_path: Path) -> None:
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.bin").write_text("old", encoding="utf-8")
    (tmp_path / "model.partial").mkdir()
    (tmp_path / "model.partial" / "stale.bin").write_text("stale", encoding="utf-8")

    def build(staging: Path) -> str:
        (staging / "half.bin").write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_directory(destination, "DONE", build)
    assert sorted(p.name for p in destination.iterdir()) == ["old.bin"]
    # A stale `.partial` from an earlier crash is cleared before the build starts.
    assert sorted(p.name for p in (tmp_path / "model.partial").iterdir()) == ["half.bin"]


@pytest.mark.parametrize("arch", ARCHS)
def test_last_logits_only_hands_the_output_layer_a_contiguous_last_position(
    make_tiny_model: MakeModel, arch: Arch
) -> None:
    """With frozen weights (as under an applied adapter), a strided last-position view makes
    torch expand the output layer's weight per row, a vocabulary-sized copy; the index form
    of `last_logits_only` gives it a contiguous tensor, and the same logits as a full pass."""
    loaded = load_model(str(make_tiny_model(arch)), models_params())
    loaded.model.requires_grad_(False)
    inputs = encode_batch(loaded, ["a short one", "a somewhat longer input text here"])
    seen: list[torch.Tensor] = []
    head = loaded.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            last = loaded.model(**inputs, **loaded.last_logits_only).logits
            full = loaded.model(**inputs).logits
    finally:
        handle.remove()
    if loaded.last_logits_only:
        assert seen[0].shape[1] == 1 and seen[0].is_contiguous()
        assert last.shape[1] == 1
    assert torch.allclose(last[:, -1, :], full[:, -1, :], atol=1e-5)
