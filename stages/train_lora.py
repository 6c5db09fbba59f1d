"""Fine-tune the generator's base model with LoRA through TRL: SFT, DPO, or SFT then DPO.

    python stages/train_lora.py --train data/sft/train.jsonl --val data/sft/val.jsonl \
        --pairs-train data/sft/pairs_train.jsonl --pairs-val data/sft/pairs_val.jsonl \
        --out models/lora-sft --metrics-out metrics/train.json \
        --loss-out metrics/train_loss.csv

Several GPUs (DDP), same script and outputs:

    accelerate launch --multi_gpu --num_processes 2 stages/train_lora.py <same options>

`train.batch_size` is then per process; `train.method` picks the trainers. Checkpoints go to
`models/lora-sft.checkpoints/`: a run killed mid-way, rerun with the same params and data,
resumes from the latest one. The adapter is written to `models/lora-sft.partial/` and renamed
into place with a `COMPLETE` marker last.
"""

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from accelerate import PartialState

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.jsonl import atomic_write_files, json_text, read_records
from minicc.lora import resolve_target_modules, save_adapter
from minicc.models import pick_device
from minicc.params import load_params
from minicc.records import PreferencePair
from minicc.seeding import seed_everything
from minicc.sft import SftExample
from minicc.trainers import (
    TrainingData,
    checkpoint_root,
    loss_csv,
    prepare_checkpoints,
    remove_checkpoints,
    run_fingerprint,
    train_phases,
    training_metrics,
)
from minicc.training import (
    base_precision,
    load_base_for_training,
    require_rows,
)


def main(
    train: Annotated[Path, typer.Option(help="Training examples written by build_sft.")],
    val: Annotated[Path, typer.Option(help="Validation examples written by build_sft.")],
    out: Annotated[Path, typer.Option(help="Adapter directory to write.")],
    metrics_out: Annotated[Path, typer.Option(help="Final losses, steps and wall time (JSON).")],
    loss_out: Annotated[Path, typer.Option(help="Training loss per optimizer step (CSV).")],
    pairs_train: Annotated[
        Path | None,
        typer.Option(help="Preference pairs of the training prompts (DPO; none: no pairs)."),
    ] = None,
    pairs_val: Annotated[
        Path | None,
        typer.Option(help="Preference pairs of the validation prompts (DPO; none: no pairs)."),
    ] = None,
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("train_lora"):
        started = time.perf_counter()
        params = load_params(params_file)
        method, settings = params.train.method, params.train
        examples, val_examples = read_records(train, SftExample), read_records(val, SftExample)
        pairs = read_records(pairs_train, PreferencePair) if pairs_train else []
        val_pairs = read_records(pairs_val, PreferencePair) if pairs_val else []
        needed_by = f"train.method={method}"
        if method != "dpo":
            require_rows(examples, train, needed_by)
            require_rows(val_examples, val, needed_by)
        if method != "sft":
            require_rows(pairs, pairs_train or Path("--pairs-train"), needed_by)
        seed_everything(params.seed)
        # Under `accelerate launch` each process gets its own GPU, where it then loads (and,
        # for QLoRA, quantizes) the base model.
        device = PartialState(cpu=pick_device(params.models.device).type == "cpu").device
        loaded = load_base_for_training(
            params.models.generator, params.models, settings.quantize_4bit, device
        )
        precision = base_precision(loaded.model)
        targets = resolve_target_modules(loaded.model, settings.target_modules)
        checkpoints = checkpoint_root(out)
        prepare_checkpoints(
            checkpoints,
            run_fingerprint(params, [p for p in (train, val, pairs_train, pairs_val) if p]),
        )
        data = TrainingData(examples, val_examples, pairs, val_pairs)
        phases, truncated = train_phases(
            loaded, targets, settings, data, checkpoints=checkpoints, seed=params.seed
        )
        model = [*phases.values()][-1].model
        state = PartialState()
        if state.is_main_process:
            config = {
                "base_model": loaded.model_id,
                "generator": params.models.generator,
                "target_modules": targets,
                "seed": params.seed,
                "train": asdict(settings),
                "train_examples": len(examples),
                "val_examples": len(val_examples),
                "pairs_train": len(pairs),
            }
            save_adapter(model, loaded.tokenizer, config, out)
            metrics = {
                **training_metrics(phases, settings),
                "train_examples": len(examples),
                "val_examples": len(val_examples),
                "pairs_train": len(pairs),
                "pairs_val": len(val_pairs),
                "truncated_examples": truncated,
                "processes": state.num_processes,
                "device": str(state.device),
                "base_precision": precision,
                "wall_time_s": round(time.perf_counter() - started, 1),
            }
            atomic_write_files(
                {metrics_out: json_text(metrics), loss_out: loss_csv([*phases.values()])}
            )
            print(
                f"train_lora: {method}, {metrics['steps']} steps on {targets} ({precision} base) "
                f"in {metrics['wall_time_s']:.0f}s -> {out}"
            )
        remove_checkpoints(checkpoints)


if __name__ == "__main__":
    typer.run(main)
