"""Supervised fine-tuning of a LoRA-wrapped model: assistant-only loss, a plain torch loop.

Each example is encoded exactly as generation sees it: the prompt is `format_request`'s text
(the chat template with the generation prompt, or the plain frame of a base model), tokenized
the same way `encode_batch` does, and the assistant's answer follows token for token, ended by
the EOS token so the model learns to stop. Only answer tokens (and the EOS) carry loss; prompt
and padding labels are -100.

The loop runs through `accelerate.Accelerator`: on one CPU process it changes nothing, and under
`accelerate launch` (several GPUs, DDP) it shards the batches and syncs the gradients.
"""

import importlib.util
import math
import sys
from dataclasses import dataclass
from functools import partial
from statistics import fmean
from typing import Any, cast

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import get_scheduler

from minicc.errors import UserError
from minicc.models import LoadedModel, load_model, pick_dtype
from minicc.params import ModelsParams, TrainParams
from minicc.prompting import format_request
from minicc.seeding import derive_seed
from minicc.sft import SftExample

IGNORE = -100
"""Label of a token that carries no loss (the value transformers' loss ignores)."""


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    """The answer was cut at `train.max_seq_len` (and lost its EOS)."""


def encode_example(loaded: LoadedModel, example: SftExample, max_seq_len: int) -> EncodedExample:
    """Token ids and labels of one conversation, masked to the assistant turn."""
    roles = [message.get("role") for message in example.messages]
    if roles != ["user", "assistant"]:
        raise UserError(
            f"SFT example {example.candidate_id!r}: messages must be a user turn then an "
            f"assistant turn, got roles {roles}; rebuild it with the build_sft stage"
        )
    tokenizer = loaded.tokenizer
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer of {loaded.model_id!r} has no EOS token to end answers")
    prompt_ids = tokenizer(
        format_request(loaded, example.messages[0]["content"]),
        add_special_tokens=not loaded.uses_chat_template,
    )["input_ids"]
    # A base model's frame ends with "Assistant:"; its answers follow after a space.
    answer = example.messages[1]["content"]
    answer_text = answer if loaded.uses_chat_template else " " + answer
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    if len(prompt_ids) >= max_seq_len:
        raise UserError(
            f"SFT example {example.candidate_id!r}: the prompt alone is {len(prompt_ids)} "
            f"tokens, not less than train.max_seq_len={max_seq_len}; raise train.max_seq_len"
        )
    ids = (prompt_ids + answer_ids)[:max_seq_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_seq_len]
    return EncodedExample(ids, labels, truncated=len(prompt_ids) + len(answer_ids) > max_seq_len)


def collate(examples: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch; padding is masked from attention and from the loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def load_base_for_training(
    spec: str, params: ModelsParams, quantize_4bit: bool, device: torch.device
) -> LoadedModel:
    """The generator's base model on this process's `device`; with `quantize_4bit`, frozen in
    4-bit NF4 for QLoRA, computing in the `models.dtype` precision.

    bitsandbytes is optional: it is imported only here, and only when asked for. Its CPU
    backend works too; the tests use it.
    """
    if not quantize_4bit:
        return load_model(spec, params, device=device)
    if device.type not in ("cuda", "cpu") or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "train.quantize_4bit needs `pip install bitsandbytes` and a CUDA GPU (or the CPU); "
            "set it to false to train in full precision"
        )
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=pick_dtype(device, params.dtype),
    )
    loaded = load_model(spec, params, device=device, quantization=quantization)
    # Keeps the norms in float32 and lets gradients reach the adapters through frozen layers,
    # with non-reentrant checkpointing (the kind DDP accepts).
    loaded.model = prepare_model_for_kbit_training(
        loaded.model, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    return loaded


def base_precision(model: Any) -> str:
    """How the frozen base weights are held, for the metrics: `nf4` (QLoRA) or a float dtype."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "nf4"
    return str(model.dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TrainResult:
    step_losses: list[tuple[int, float]]
    """(optimizer step, mean training loss of the batches in that step)."""
    train_loss: float
    """Mean step loss over the last epoch."""
    val_loss_before: float
    val_loss: float
    steps: int


@torch.no_grad()
def mean_token_loss(model: Any, loader: Any, accelerator: Accelerator) -> float:
    """Loss per answer token over a whole data set (summed over batches and processes)."""
    model.eval()
    total = torch.zeros((), device=accelerator.device)
    tokens = torch.zeros((), device=accelerator.device)
    for batch in loader:
        counted = (batch["labels"][:, 1:] != IGNORE).sum()
        total += accelerator.gather(model(**batch).loss.float() * counted).sum()
        tokens += accelerator.gather(counted).sum()
    return float(total / tokens.clamp_min(1))


def fit(
    accelerator: Accelerator,
    model: Any,
    train: list[EncodedExample],
    val: list[EncodedExample],
    params: TrainParams,
    *,
    pad_id: int,
    seed: int,
) -> tuple[Any, TrainResult]:
    """Train the LoRA parameters of `model` with AdamW; returns the prepared model and losses.

    The scheduler runs over the optimizer steps this process takes (batches / grad_accum per
    epoch), so it ends at the same point whatever the number of processes.
    """
    order = torch.Generator().manual_seed(derive_seed(seed, "train-order"))
    batches = partial(collate, pad_id=pad_id)
    # A list is a map-style dataset; torch's stubs only name the Dataset class.
    loader: Any = DataLoader(
        cast(Any, train),
        batch_size=params.batch_size,
        shuffle=True,
        generator=order,
        collate_fn=batches,
    )
    val_loader: Any = DataLoader(cast(Any, val), batch_size=params.batch_size, collate_fn=batches)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr)
    model, optimizer, loader, val_loader = accelerator.prepare(model, optimizer, loader, val_loader)
    total_steps = math.ceil(len(loader) / params.grad_accum) * params.epochs
    scheduler = get_scheduler(
        params.scheduler, optimizer, num_warmup_steps=0, num_training_steps=total_steps
    )
    val_before = mean_token_loss(model, val_loader, accelerator)
    step_losses: list[tuple[int, float]] = []
    pending: list[float] = []
    progress = tqdm(
        total=total_steps,
        desc="train_lora",
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not accelerator.is_local_main_process,
    )
    with progress:
        for _ in range(params.epochs):
            model.train()
            for batch in loader:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                pending.append(float(accelerator.gather(loss.detach()).mean()))
                if accelerator.sync_gradients:
                    scheduler.step()
                    step_losses.append((len(step_losses) + 1, fmean(pending)))
                    pending = []
                    progress.update(1)
                    progress.set_postfix(loss=f"{step_losses[-1][1]:.3f}")
    last_epoch = step_losses[-(len(step_losses) // params.epochs) :]
    return model, TrainResult(
        step_losses=step_losses,
        train_loss=fmean(loss for _, loss in last_epoch),
        val_loss_before=val_before,
        val_loss=mean_token_loss(model, val_loader, accelerator),
        steps=len(step_losses),
    )
