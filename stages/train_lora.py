"""Fine-tune the generator's base model with LoRA on the SFT data (assistant-only loss).

    python stages/train_lora.py --train data/sft/train.jsonl --val data/sft/val.jsonl \
        --out models/lora-sft --metrics-out metrics/train.json \
        --loss-out metrics/train_loss.csv

Several GPUs (DDP), same script and outputs:

    accelerate launch --multi_gpu --num_processes 2 stages/train_lora.py <same options>

`train.batch_size` is then per process. The adapter is written to `models/lora-sft.partial/`
and renamed into place with a `COMPLETE` marker last; an interrupted run leaves no adapter and
the next run trains from scratch (there are no checkpoints to resume from).
"""

import time
from dataclasses import asdict
from pathlib import Path

import typer
from accelerate import Accelerator

from minicc.cli import stage_errors
from minicc.jsonl import atomic_write_files, json_text, read_records
from minicc.lora import add_lora, resolve_target_modules, save_adapter
from minicc.models import pick_device
from minicc.params import load_params
from minicc.seeding import seed_everything
from minicc.sft import SftExample
from minicc.training import base_precision, encode_example, fit, load_base_for_training


def main(
    train: Path = typer.Option(..., help="Training examples written by build_sft."),
    val: Path = typer.Option(..., help="Validation examples written by build_sft."),
    out: Path = typer.Option(..., help="Adapter directory to write."),
    metrics_out: Path = typer.Option(..., help="Final losses, steps and wall time (JSON)."),
    loss_out: Path = typer.Option(..., help="Training loss per optimizer step (CSV)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    with stage_errors("train_lora"):
        started = time.perf_counter()
        params = load_params(params_file)
        train_rows = read_records(train, SftExample)
        val_rows = read_records(val, SftExample)
        seed_everything(params.seed)
        # The accelerator comes first: under `accelerate launch` it gives each process its own
        # GPU, where that process then loads (and, for QLoRA, quantizes) the base model.
        accelerator = Accelerator(
            gradient_accumulation_steps=params.train.grad_accum,
            cpu=pick_device(params.models.device).type == "cpu",
        )
        loaded = load_base_for_training(
            params.models.generator, params.models, params.train.quantize_4bit, accelerator.device
        )
        precision = base_precision(loaded.model)
        targets = resolve_target_modules(loaded.model, params.train.target_modules)
        model = add_lora(loaded.model, params.train, targets)
        max_len = params.train.max_seq_len
        train_set = [encode_example(loaded, row, max_len) for row in train_rows]
        val_set = [encode_example(loaded, row, max_len) for row in val_rows]
        model, result = fit(
            accelerator,
            model,
            train_set,
            val_set,
            params.train,
            pad_id=loaded.tokenizer.pad_token_id,
            seed=params.seed,
        )
        wall_time = time.perf_counter() - started
        if accelerator.is_main_process:
            config = {
                "base_model": loaded.model_id,
                "generator": params.models.generator,
                "target_modules": targets,
                "seed": params.seed,
                "train": asdict(params.train),
                "train_examples": len(train_set),
                "val_examples": len(val_set),
            }
            save_adapter(accelerator.unwrap_model(model), loaded.tokenizer, config, out)
            metrics = {
                "train_loss": round(result.train_loss, 4),
                "val_loss_before": round(result.val_loss_before, 4),
                "val_loss": round(result.val_loss, 4),
                "steps": result.steps,
                "train_examples": len(train_set),
                "val_examples": len(val_set),
                "truncated_examples": sum(e.truncated for e in train_set + val_set),
                "processes": accelerator.num_processes,
                "device": str(accelerator.device),
                "base_precision": precision,
                "wall_time_s": round(wall_time, 1),
            }
            rows = "".join(f"{step},{loss:.4f}\n" for step, loss in result.step_losses)
            atomic_write_files({metrics_out: json_text(metrics), loss_out: "step,loss\n" + rows})
            print(
                f"train_lora: {result.steps} steps, train loss {result.train_loss:.4f}, val loss "
                f"{result.val_loss_before:.4f} -> {result.val_loss:.4f} on {targets} "
                f"({precision} base) in {wall_time:.0f}s -> {out}"
            )
        accelerator.wait_for_everyone()


if __name__ == "__main__":
    typer.run(main)
