"""The train_lora script itself on a tiny model: under a distributed launcher (DDP, two CPU
processes) and with a 4-bit QLoRA base (bitsandbytes' CPU backend).

`accelerate launch --multi_gpu` starts its processes through `torch.distributed.run`, the same
launcher as `torchrun`; on a machine without GPUs `torchrun` is how DDP runs, over gloo.
bitsandbytes is not in the project's environment (see the Makefile): the QLoRA run gets it on
its own path from `.venv/optional`.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, MakeModel, models_params, write_params
from safetensors.torch import load_file

from minicc.errors import UserError
from minicc.lora import COMPLETE_MARKER, apply_adapter
from minicc.models import load_model
from minicc.training import load_base_for_training

OPTIONAL = ROOT / ".venv" / "optional"
EXAMPLES = 8


def sft_rows(ids: range) -> str:
    """Examples with answers of one length, so every batch carries as many loss tokens."""
    rows = [
        {
            "prompt_id": f"p{i}",
            "category": "cooperative",
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": "I can't help with that."},
            ],
            "score": 4.0,
            "candidate_id": f"p{i}/0",
        }
        for i in ids
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def train(
    tmp_path: Path, model: Path, name: str, train: dict[str, Any], launcher: list[str], **env: str
) -> tuple[Path, dict[str, Any]]:
    """Run train_lora on the tiny model; returns the adapter directory and the metrics."""
    run = tmp_path / name
    run.mkdir()
    (run / "train.jsonl").write_text(sft_rows(range(EXAMPLES)), encoding="utf-8")
    (run / "val.jsonl").write_text(sft_rows(range(EXAMPLES, EXAMPLES + 2)), encoding="utf-8")
    models = {"generator": str(model), "device": "cpu", "dtype": "float32"}
    # No dropout: the runs compared must differ only in how the batches are spread.
    settings = {"epochs": 2, "lora_dropout": 0.0, "lr": 0.01, "max_seq_len": 64, **train}
    params = write_params(run / "params.yaml", {"models": models, "train": settings})
    options = ["--train", "train.jsonl", "--val", "val.jsonl", "--out", "lora"]
    options += ["--metrics-out", "train.json", "--loss-out", "loss.csv", "--params", str(params)]
    done = subprocess.run(
        [*launcher, str(ROOT / "stages" / "train_lora.py"), *options],
        cwd=run,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "MINICC_CACHE_DIR": str(run / "cache"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert (run / "lora" / COMPLETE_MARKER).is_file()
    assert not (run / "lora.partial").exists()
    return run / "lora", json.loads((run / "train.json").read_text(encoding="utf-8"))


def test_two_ddp_processes_train_exactly_like_one_with_both_batches(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """DDP averages the two processes' gradients: with batches of 2 each it must take the very
    steps one process takes with batches of 4 (same shuffled order, same answer lengths)."""
    model = make_tiny_model("llama")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ddp_adapter, ddp = train(
        tmp_path, model, "ddp", {"batch_size": 2}, [*torchrun, "--nproc_per_node", "2"]
    )
    one_adapter, one = train(tmp_path, model, "one", {"batch_size": 4}, [sys.executable])
    assert (ddp["processes"], one["processes"]) == (2, 1)
    assert ddp["steps"] == one["steps"] == 2 * EXAMPLES // 4
    assert ddp["val_loss_before"] == pytest.approx(one["val_loss_before"], abs=1e-4)
    assert ddp["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    assert ddp["val_loss"] < ddp["val_loss_before"]
    ddp_weights = load_file(ddp_adapter / "adapter_model.safetensors")
    one_weights = load_file(one_adapter / "adapter_model.safetensors")
    assert ddp_weights.keys() == one_weights.keys()
    for name, weight in ddp_weights.items():
        torch.testing.assert_close(weight, one_weights[name], atol=1e-5, rtol=1e-4)
    assert any(w.abs().max() > 1e-3 for n, w in ddp_weights.items() if "lora_B" in n)


def test_qlora_trains_adapters_on_a_4bit_base_that_fit_the_full_precision_base(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    if not (OPTIONAL / "bitsandbytes").is_dir():
        pytest.fail(f"bitsandbytes is missing from {OPTIONAL}: run `make install`")
    model = make_tiny_model("llama", width=64)
    adapter, metrics = train(
        tmp_path,
        model,
        "qlora",
        {"batch_size": 2, "quantize_4bit": True},
        [sys.executable],
        PYTHONPATH=str(OPTIONAL),
    )
    assert metrics["base_precision"] == "nf4"
    assert metrics["val_loss"] < metrics["val_loss_before"]
    # Evaluation puts the adapter on the full-precision base, as QLoRA users do.
    base = load_model(str(model), models_params())
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        before = base.model(input_ids=ids).logits
        after = apply_adapter(base, adapter).model(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_qlora_without_bitsandbytes_says_how_to_get_it(
    make_tiny_model: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name, *args: None if name == "bitsandbytes" else real_find_spec(name, *args),
    )
    with pytest.raises(UserError, match="pip install bitsandbytes"):
        load_base_for_training(
            str(make_tiny_model("llama")), models_params(), True, torch.device("cpu")
        )
