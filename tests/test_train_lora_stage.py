"""The train_lora script itself on a tiny model: each `train.method`, determinism, resuming a
killed run from its checkpoint, bad input, a distributed launcher (DDP, two CPU processes) and
a 4-bit QLoRA base (bitsandbytes' CPU backend).

`accelerate launch --multi_gpu` starts its processes through `torch.distributed.run`, the same
launcher as `torchrun`; on a machine without GPUs `torchrun` is how DDP runs, over gloo.
bitsandbytes is not in the project's environment (see the Makefile): the QLoRA run gets it on
its own path from `.venv/optional`.
"""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from conftest import ROOT, MakeModel, models_params, write_params
from safetensors.torch import load_file

from minicc.errors import UserError
from minicc.lora import COMPLETE_MARKER, apply_adapter
from minicc.models import load_model
from minicc.trainers import latest_checkpoint
from minicc.training import load_base_for_training

OPTIONAL = ROOT / ".venv" / "optional"
PAUSE = ROOT / "tests" / "pause_stage.py"
STAGE = ROOT / "stages" / "train_lora.py"
EXAMPLES = 8
WEIGHTS = "adapter_model.safetensors"


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
            "finish_reason": "eos",
            "trimmed": None,
            "ends_turn": True,
        }
        for i in ids
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def pair_rows(ids: range) -> str:
    rows = [
        {
            "prompt": f"Question {i}?",
            "chosen": "I can't help with that.",
            "rejected": "Sure, here is how to do it.",
            "prompt_id": f"p{i}",
            "category": "adversarial",
            "chosen_id": f"p{i}/0",
            "rejected_id": f"p{i}/1",
            "chosen_score": 4.5,
            "rejected_score": 1.5,
        }
        for i in ids
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def prepare(
    tmp_path: Path, model: Path, name: str, train: dict[str, Any], pairs: int = EXAMPLES
) -> tuple[Path, list[str]]:
    """A run folder with SFT data, `pairs` preference pairs and params; returns it and the
    stage's options."""
    run = tmp_path / name
    run.mkdir()
    (run / "train.jsonl").write_text(sft_rows(range(EXAMPLES)), encoding="utf-8")
    (run / "val.jsonl").write_text(sft_rows(range(EXAMPLES, EXAMPLES + 2)), encoding="utf-8")
    (run / "pairs_train.jsonl").write_text(pair_rows(range(pairs)), encoding="utf-8")
    val_pairs = pair_rows(range(EXAMPLES, EXAMPLES + 2)) if pairs else ""
    (run / "pairs_val.jsonl").write_text(val_pairs, encoding="utf-8")
    models = {"generator": str(model), "device": "cpu", "dtype": "float32"}
    # No dropout: the runs compared must differ only in what the test changes.
    settings = {"epochs": 2, "lora_dropout": 0.0, "lr": 0.01, "dpo_lr": 0.01, "max_seq_len": 64}
    settings |= train
    params = write_params(run / "params.yaml", {"models": models, "train": settings})
    options = ["--train", "train.jsonl", "--val", "val.jsonl", "--out", "lora"]
    options += ["--pairs-train", "pairs_train.jsonl", "--pairs-val", "pairs_val.jsonl"]
    options += ["--metrics-out", "train.json", "--loss-out", "loss.csv", "--params", str(params)]
    return run, options


def stage_env(run: Path, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MINICC_CACHE_DIR": str(run / "cache"),
        **env,
    }


def finish(run: Path, options: list[str], launcher: list[str], **env: str) -> dict[str, Any]:
    """Run train_lora to the end; returns its metrics."""
    done = subprocess.run(
        [*launcher, str(STAGE), *options],
        cwd=run,
        env=stage_env(run, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert (run / "lora" / COMPLETE_MARKER).is_file()
    assert not (run / "lora.partial").exists()
    assert not (run / "lora.checkpoints").exists(), "a finished run removes its checkpoints"
    metrics: dict[str, Any] = json.loads((run / "train.json").read_text(encoding="utf-8"))
    return metrics


def train(
    tmp_path: Path, model: Path, name: str, train: dict[str, Any], launcher: list[str], **env: str
) -> tuple[Path, dict[str, Any]]:
    """Run train_lora on the tiny model; returns the adapter directory and the metrics."""
    run, options = prepare(tmp_path, model, name, train)
    return run / "lora", finish(run, options, launcher, **env)


def losses(run: Path) -> list[float]:
    lines = (run / "loss.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "step,loss"
    steps = [int(line.split(",")[0]) for line in lines[1:]]
    assert steps == list(range(1, len(steps) + 1)), "steps numbered on across phases"
    return [float(line.split(",")[1]) for line in lines[1:]]


def test_same_params_give_byte_identical_adapters(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    model = make_tiny_model("llama")
    first, metrics = train(tmp_path, model, "first", {"batch_size": 4}, [sys.executable])
    second, _ = train(tmp_path, model, "second", {"batch_size": 4}, [sys.executable])
    assert (first / WEIGHTS).read_bytes() == (second / WEIGHTS).read_bytes()
    assert (first.parent / "loss.csv").read_bytes() == (second.parent / "loss.csv").read_bytes()
    assert metrics["method"] == "sft" and metrics["resumed_from_step"] == 0
    assert metrics["val_loss"] < metrics["val_loss_before"]
    assert len(metrics) <= 20


@pytest.mark.parametrize("method", ["dpo", "sft_dpo"])
def test_dpo_trains_the_adapter_towards_the_chosen_answers(
    method: str, make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    model = make_tiny_model("llama")
    settings = {"method": method, "batch_size": 4, "dpo_epochs": 3}
    adapter, metrics = train(tmp_path, model, method, settings, [sys.executable])
    dpo_steps = 3 * EXAMPLES // 4
    sft_steps = 2 * EXAMPLES // 4 if method == "sft_dpo" else 0
    assert metrics["method"] == method
    assert metrics["steps"] == sft_steps + dpo_steps
    assert ("val_loss" in metrics) == (method == "sft_dpo")
    dpo = losses(adapter.parent)[sft_steps:]
    # The policy starts equal to its reference: DPO's first loss is exactly ln 2.
    assert dpo[0] == pytest.approx(math.log(2), abs=1e-4)
    assert dpo[-1] < dpo[0] - 0.01
    assert metrics["dpo_train_loss"] < math.log(2)
    assert 0 <= metrics["dpo_val_reward_accuracy"] <= 1
    assert len(metrics) <= 20
    # Only the trained adapter is saved, not DPO's frozen reference copy, and it loads.
    assert sorted(p.name for p in adapter.iterdir() if p.is_dir()) == []
    base = load_model(str(model), models_params())
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        before = base.model(input_ids=ids).logits
        after = apply_adapter(base, adapter).model(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_the_dpo_phase_takes_its_own_learning_rate(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """`train.dpo_lr`, not `train.lr`, drives DPO: at a rate too small to move the adapter the
    policy stays equal to its reference (each DPO loss ln 2) while the SFT phase before it,
    at `lr`, learns."""
    model = make_tiny_model("llama")
    settings = {"method": "sft_dpo", "batch_size": 4, "dpo_epochs": 2, "dpo_lr": 1e-12}
    adapter, metrics = train(tmp_path, model, "frozen-dpo", settings, [sys.executable])
    sft_steps = 2 * EXAMPLES // 4
    assert metrics["val_loss"] < metrics["val_loss_before"]
    dpo = losses(adapter.parent)[sft_steps:]
    assert len(dpo) == 2 * EXAMPLES // 4
    assert dpo == pytest.approx([math.log(2)] * len(dpo), abs=1e-4)  # the CSV keeps 4 decimals


def test_dpo_sft_weight_adds_the_chosen_replys_nll_at_that_weight(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """`train.dpo_sft_weight` w adds w times the chosen reply's NLL to DPO's loss (RPO): with the
    policy held at its reference (a rate too small to move it) each loss is ln 2 + w * NLL, the
    same NLL at every weight."""
    model = make_tiny_model("llama")
    extra = {}
    for weight in (1.0, 2.0):
        settings = {"method": "dpo", "batch_size": 4, "dpo_lr": 1e-12, "dpo_sft_weight": weight}
        adapter, _ = train(tmp_path, model, f"rpo-{weight}", settings, [sys.executable])
        extra[weight] = [loss - math.log(2) for loss in losses(adapter.parent)]
    assert len(extra[1.0]) == EXAMPLES // 4
    assert all(nll > 1.0 for nll in extra[1.0])  # a random model's NLL is about ln(vocab)
    assert extra[2.0] == pytest.approx([2 * nll for nll in extra[1.0]], rel=1e-3)


@pytest.mark.parametrize(
    ("settings", "backward", "phase", "checkpoint_step", "resumed", "steps"),
    [
        # Killed in the middle of SFT, with a checkpoint every 2 steps.
        ({"batch_size": 1, "epochs": 1, "checkpoint_steps": 2}, 5, "sft", 4, 4, EXAMPLES),
        # Killed in DPO's second step: SFT's 4 steps are not redone, DPO goes on from its first.
        (
            {"method": "sft_dpo", "batch_size": 4, "dpo_epochs": 2, "checkpoint_steps": 1},
            6,
            "dpo",
            1,
            4 + 1,
            4 + 4,
        ),
    ],
    ids=["sft", "sft_dpo"],
)
def test_a_killed_run_resumes_from_its_last_checkpoint(
    settings: dict[str, Any],
    backward: int,
    phase: str,
    checkpoint_step: int,
    resumed: int,
    steps: int,
    make_tiny_model: MakeModel,
    tmp_path: Path,
) -> None:
    """SIGKILL right after a chosen backward pass; the rerun starts from the latest checkpoint
    and ends with the adapter an uninterrupted run writes."""
    model = make_tiny_model("llama")
    run, options = prepare(tmp_path, model, "killed", settings)
    flag = run / "paused"
    process = subprocess.Popen(
        [sys.executable, str(PAUSE), str(flag), f"backward:{backward}", str(STAGE), *options],
        cwd=run,
        env=stage_env(run),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not flag.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"train_lora did not reach backward pass {backward}:\n{out}\n{err}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    checkpoint = latest_checkpoint(run / "lora.checkpoints" / phase)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{checkpoint_step}"
    assert not (run / "lora").exists() and not (run / "train.json").exists()

    metrics = finish(run, options, [sys.executable])
    assert metrics["resumed_from_step"] == resumed
    assert metrics["steps"] == steps
    assert len(losses(run)) == steps, "the loss CSV keeps the steps before the kill"

    # Measured: the Trainer restores the optimizer, scheduler, RNG states and data position, so
    # the resumed adapter is byte for byte an uninterrupted run's (one CPU process).
    whole, _ = prepare(tmp_path, model, "whole", settings)
    finish(whole, options, [sys.executable])
    assert (run / "lora" / WEIGHTS).read_bytes() == (whole / "lora" / WEIGHTS).read_bytes()
    assert (run / "loss.csv").read_bytes() == (whole / "loss.csv").read_bytes()


def test_changed_params_discard_the_old_checkpoints(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    model = make_tiny_model("llama")
    run, options = prepare(tmp_path, model, "stale", {"batch_size": 4})
    stale = run / "lora.checkpoints" / "sft" / "checkpoint-1"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}", encoding="utf-8")
    metrics = finish(run, options, [sys.executable])
    assert metrics["resumed_from_step"] == 0


def call_stage(run: Path, options: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the stage's main in this process; returns its error line."""
    spec = importlib.util.spec_from_file_location("train_lora_stage", STAGE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [o.removeprefix("--").replace("-", "_") for o in options[::2]]
    kwargs = {
        ("params_file" if n == "params" else n): run / v
        for n, v in zip(names, options[1::2], strict=True)
    }
    with pytest.raises(typer.Exit) as exit_info:
        module.main(**kwargs)
    assert exit_info.value.exit_code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("method", ["dpo", "sft_dpo"])
def test_dpo_without_pairs_names_the_file_and_the_key(
    method: str, make_tiny_model: MakeModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, options = prepare(tmp_path, make_tiny_model("llama"), "nopairs", {"method": method}, 0)
    before = sorted(p.name for p in run.iterdir())
    error = call_stage(run, options, capsys)
    assert "pairs_train.jsonl: no examples" in error and f"train.method={method}" in error
    assert sorted(p.name for p in run.iterdir()) == before, "nothing is written"


def test_an_empty_sft_file_names_the_file_and_the_key(
    make_tiny_model: MakeModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, options = prepare(tmp_path, make_tiny_model("llama"), "nosft", {"method": "sft"})
    (run / "train.jsonl").write_text("", encoding="utf-8")
    before = sorted(p.name for p in run.iterdir())
    error = call_stage(run, options, capsys)
    assert "train.jsonl: no examples" in error and "train.method=sft" in error
    assert sorted(p.name for p in run.iterdir()) == before, "nothing is written"


def test_two_ddp_processes_take_the_steps_of_one_with_both_batches(
    make_tiny_model: MakeModel, tmp_path: Path
) -> None:
    """DDP shards each step's batch over the processes: with batches of 2 each, two processes
    take as many steps as one with batches of 4, from the same starting point."""
    model = make_tiny_model("llama")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ddp_adapter, ddp = train(
        tmp_path, model, "ddp", {"batch_size": 2}, [*torchrun, "--nproc_per_node", "2"]
    )
    _, one = train(tmp_path, model, "one", {"batch_size": 4}, [sys.executable])
    assert (ddp["processes"], one["processes"]) == (2, 1)
    assert ddp["steps"] == one["steps"] == 2 * EXAMPLES // 4
    assert ddp["val_loss_before"] == pytest.approx(one["val_loss_before"], abs=1e-4)
    assert ddp["val_loss"] < ddp["val_loss_before"]
    weights = load_file(ddp_adapter / WEIGHTS)
    assert any(w.abs().max() > 1e-3 for n, w in weights.items() if "lora_B" in n)


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
