"""LoRA training with TRL: SFT, DPO, or SFT then DPO, resumable from the Trainer's checkpoints.

Each phase (`sft`, `dpo`) checkpoints under `<adapter>.checkpoints/<phase>/checkpoint-N` every
`train.checkpoint_steps` optimizer steps and at its end: the adapter, optimizer, scheduler, RNG
states and the position in the data. A rerun with the same params and data resumes from the
latest complete checkpoint (a finished SFT phase of `sft_dpo` is then not redone); a run with
anything changed starts over. The stage removes the checkpoints once the adapter is written.

DPO's reference model is never a second copy of the base: a fresh adapter is trained against
the base with the adapter disabled; after SFT, TRL adds a frozen copy of the SFT adapter as
the reference, so DPO pulls away from the SFT model, not from the base.
"""

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset
from peft import LoraConfig
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from minicc.jsonl import atomic_write_text, json_text
from minicc.lora import add_lora, lora_config
from minicc.models import LoadedModel
from minicc.params import Params, TrainParams
from minicc.records import PreferencePair
from minicc.sft import SftExample
from minicc.training import dpo_dataset, sft_dataset

RUN_FILE = "run.json"
"""What the checkpoints were trained from; checkpoints of any other run are discarded."""
TRAINER_STATE = "trainer_state.json"
"""The Trainer writes it last into a checkpoint: without it, the checkpoint is incomplete."""


def checkpoint_root(adapter: Path) -> Path:
    """`models/lora-sft` -> `models/lora-sft.checkpoints` (ignored by git and DVC)."""
    return adapter.with_name(adapter.name + ".checkpoints")


def run_fingerprint(params: Params, inputs: list[Path]) -> dict[str, Any]:
    """Everything a resumed run must share with the interrupted one: params and input bytes."""
    return {
        "seed": params.seed,
        "models": dataclasses.asdict(params.models),
        "train": dataclasses.asdict(params.train),
        "inputs": {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in inputs},
    }


def prepare_checkpoints(root: Path, fingerprint: dict[str, Any]) -> None:
    """Keep `root`'s checkpoints if an identical run wrote them, else start it empty."""
    state = PartialState()
    if state.is_main_process:
        run_file = root / RUN_FILE
        text = json_text(fingerprint)
        if not run_file.is_file() or run_file.read_text(encoding="utf-8") != text:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            atomic_write_text(run_file, text)
    state.wait_for_everyone()


def latest_checkpoint(phase_dir: Path) -> Path | None:
    """The newest complete checkpoint of a phase, if any."""
    complete = [
        path
        for path in phase_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit()
        and (path / TRAINER_STATE).is_file()
    ]
    return max(complete, key=lambda path: int(path.name.rsplit("-", 1)[1]), default=None)


@dataclass(frozen=True)
class PhaseResult:
    model: Any
    """The trained peft model."""
    step_losses: list[tuple[int, float]]
    """(optimizer step, training loss of that step), from the first step even when resumed."""
    resumed_from_step: int
    """Step of the checkpoint this run resumed from; 0 when it started afresh."""
    eval_before: dict[str, float]
    eval_after: dict[str, float]
    """The Trainer's evaluation on the validation set (empty without one)."""


def _config_kwargs(
    params: TrainParams, output_dir: Path, epochs: int, lr: float, seed: int
) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": params.batch_size,
        "per_device_eval_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accum,
        "learning_rate": lr,
        "lr_scheduler_type": params.scheduler,
        "max_length": params.max_seq_len,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": params.checkpoint_steps,
        "save_total_limit": 1,
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        # The base is loaded in models.dtype and QLoRA turns its own checkpointing on; TRL's
        # defaults (bf16 autocast, gradient checkpointing) would change the numbers and slow a
        # CPU run down. transformers now calls gradient checkpointing activation checkpointing
        # and warns on the old name, which TRL's configs still default to True: the new name,
        # set, overrides it without the warning.
        "bf16": False,
        "activation_checkpointing": False,
        "use_cpu": PartialState().device.type == "cpu",
        "disable_tqdm": False,
        # Evaluation needs the loss only; gathering every logit would dominate its time.
        "prediction_loss_only": True,
    }


def _fit(trainer: Any, phase_dir: Path, val: Dataset | None, measure_before: bool) -> PhaseResult:
    before = trainer.evaluate() if val is not None and measure_before else {}
    checkpoint = latest_checkpoint(phase_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    losses = [
        (entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry
    ]
    return PhaseResult(
        model=trainer.model,
        step_losses=losses,
        resumed_from_step=int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0,
        eval_before=before,
        eval_after=trainer.evaluate() if val is not None else {},
    )


def sft_trainer(
    model: Any,
    tokenizer: Any,
    train: Dataset,
    val: Dataset,
    params: TrainParams,
    *,
    phase_dir: Path,
    seed: int,
) -> SFTTrainer:
    """SFTTrainer for `model`'s LoRA adapter, loss on the completions only."""
    config = SFTConfig(
        **_config_kwargs(params, phase_dir, params.epochs, params.lr, seed),
        completion_only_loss=True,
        packing=False,
    )
    return SFTTrainer(
        model=model, args=config, train_dataset=train, eval_dataset=val, processing_class=tokenizer
    )


def _dpo_loss_kwargs(sft_weight: float) -> dict[str, Any]:
    """DPO's sigmoid loss, plus the chosen reply's NLL at `sft_weight` when it is above 0."""
    if sft_weight == 0:
        return {}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def run_dpo(
    model: Any,
    tokenizer: Any,
    train: Dataset,
    val: Dataset | None,
    params: TrainParams,
    *,
    new_adapter: LoraConfig | None,
    phase_dir: Path,
    seed: int,
) -> PhaseResult:
    """Train with DPOTrainer on prompt/chosen/rejected pairs.

    `model` is the base with `new_adapter` (trained against the adapter-disabled base), or a
    peft model whose adapter goes on training (against a frozen copy of it).
    """
    config = DPOConfig(
        **_config_kwargs(params, phase_dir, params.dpo_epochs, params.dpo_lr, seed),
        beta=params.dpo_beta,
        **_dpo_loss_kwargs(params.dpo_sft_weight),
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=new_adapter,
    )
    # DPO starts with the policy equal to its reference: its loss before is ln 2 by design.
    return _fit(trainer, phase_dir, val, measure_before=False)


@dataclass(frozen=True)
class TrainingData:
    examples: list[SftExample]
    val_examples: list[SftExample]
    pairs: list[PreferencePair]
    val_pairs: list[PreferencePair]


def train_phases(
    loaded: LoadedModel,
    targets: list[str],
    params: TrainParams,
    data: TrainingData,
    *,
    checkpoints: Path,
    seed: int,
) -> tuple[dict[str, PhaseResult], int]:
    """The phases `train.method` asks for, in order, each resuming from its checkpoints;
    returns them and the number of truncated rows."""
    phases: dict[str, PhaseResult] = {}
    truncated = 0
    model, tokenizer, max_len = loaded.model, loaded.tokenizer, params.max_seq_len
    if params.method != "dpo":
        train = sft_dataset(loaded, data.examples, max_len)
        val = sft_dataset(loaded, data.val_examples, max_len)
        truncated += train.truncated + val.truncated
        model = add_lora(model, params, targets)
        phase_dir = checkpoints / "sft"
        trainer = sft_trainer(
            model, tokenizer, train.dataset, val.dataset, params, phase_dir=phase_dir, seed=seed
        )
        phases["sft"] = _fit(trainer, phase_dir, val.dataset, measure_before=True)
        model = phases["sft"].model
    if params.method != "sft":
        pairs = dpo_dataset(loaded, data.pairs, max_len)
        val_pairs = dpo_dataset(loaded, data.val_pairs, max_len) if data.val_pairs else None
        truncated += pairs.truncated + (val_pairs.truncated if val_pairs else 0)
        phases["dpo"] = run_dpo(
            model,
            tokenizer,
            pairs.dataset,
            val_pairs.dataset if val_pairs else None,
            params,
            # A fresh adapter for DPO alone; after SFT, the SFT adapter goes on training.
            new_adapter=lora_config(params, targets) if params.method == "dpo" else None,
            phase_dir=checkpoints / "dpo",
            seed=seed,
        )
    return phases, truncated


def loss_csv(phases: list[PhaseResult]) -> str:
    """`step,loss` rows, the steps of a later phase numbered on after an earlier phase's."""
    rows, offset = [], 0
    for phase in phases:
        rows += [f"{offset + step},{loss:.4f}\n" for step, loss in phase.step_losses]
        offset += phase.step_losses[-1][0] if phase.step_losses else 0
    return "step,loss\n" + "".join(rows)


def train_loss(phase: PhaseResult, epochs: int) -> float:
    """Mean step loss over the last epoch of a phase."""
    last = phase.step_losses[-max(1, len(phase.step_losses) // epochs) :]
    return sum(loss for _, loss in last) / len(last)


def remove_checkpoints(root: Path) -> None:
    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(root, ignore_errors=True)


def training_metrics(phases: dict[str, PhaseResult], params: TrainParams) -> dict[str, Any]:
    """The headline numbers of each phase that ran, for metrics/train.json."""
    metrics: dict[str, Any] = {
        "method": params.method,
        "steps": sum(len(phase.step_losses) for phase in phases.values()),
        "resumed_from_step": sum(phase.resumed_from_step for phase in phases.values()),
    }
    if "sft" in phases:
        sft = phases["sft"]
        metrics["train_loss"] = round(train_loss(sft, params.epochs), 4)
        metrics["val_loss_before"] = round(sft.eval_before["eval_loss"], 4)
        metrics["val_loss"] = round(sft.eval_after["eval_loss"], 4)
    if "dpo" in phases:
        dpo = phases["dpo"]
        metrics["dpo_train_loss"] = round(train_loss(dpo, params.dpo_epochs), 4)
        if dpo.eval_after:
            metrics["dpo_val_loss"] = round(dpo.eval_after["eval_loss"], 4)
            accuracy = dpo.eval_after["eval_rewards/accuracies"]
            metrics["dpo_val_reward_accuracy"] = round(accuracy, 4)
            metrics["dpo_val_reward_margin"] = round(dpo.eval_after["eval_rewards/margins"], 4)
    return metrics
