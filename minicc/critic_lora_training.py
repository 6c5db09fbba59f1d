"""Fine-tuning the LoRA critic (minicc/critic_lora.py) on labeled responses and requests.

Each input has a target and a weight per head, and counts only for the heads it has a label for:
a (request, reply) row for the reply heads (`LABELS` of minicc/critic_training.py), a request
alone (each labeled request, each distinct prompt of the rows that its source labels) for
`request_harmful`. The loss is the mean binary cross-entropy over the labeled (row, head) cells,
on float32 logits; with `class_balanced` each cell is weighted as the probe's logistic heads
weight their rows (scikit-learn's "balanced": labeled rows / (2 x rows of the cell's class), per
head), so that a head's rarer class counts as much as the other.
transformers' Trainer runs the loop, seeded: batches of similar length drawn from the seeded
generator, so the same rows and seed give the same weights.
"""

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from transformers import Trainer, TrainingArguments

from minicc.critic_lora import (
    CriticLoraManifest,
    Encoder,
    LoraSettings,
    build_classifier,
    pad_left,
    save_critic_lora,
)
from minicc.critic_training import LABELS
from minicc.errors import UserError
from minicc.labeled import LabeledRequest, LabeledResponse
from minicc.models import ResolvedModel
from minicc.seeding import seed_everything


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    targets: list[float]
    weights: list[float]
    """Each head's weight in the loss, in the params' head order: 0 where it has no label."""


def _labeled_inputs(
    rows: list[LabeledResponse], requests: list[LabeledRequest]
) -> list[tuple[str, str | None, dict[str, bool | None]]]:
    """(request, reply or None for the request alone, labels) of every training input.

    `request_harmful` is learned from requests alone: each labeled request, and each distinct
    prompt of the rows whose source labels it. Learned from (request, reply) pairs, it read the
    reply instead (a refusal made the request "harmful", compliance made it "harmless").
    """
    pairs = [(r.prompt, r.response, {n: label(r) for n, label in LABELS.items()}) for r in rows]
    prompts: dict[str, bool] = {}
    for row in rows:
        if row.prompt_label != "unknown":
            prompts.setdefault(row.prompt, row.prompt_label == "unsafe")
    alone: list[tuple[str, str | None, dict[str, bool | None]]] = [
        (prompt, None, {"request_harmful": harmful}) for prompt, harmful in prompts.items()
    ]
    alone += [(q.prompt, None, {"request_harmful": q.harmful}) for q in requests]
    return [*pairs, *alone]


def training_examples(
    encode: Encoder,
    rows: list[LabeledResponse],
    requests: list[LabeledRequest],
    params: LoraSettings,
) -> list[Example]:
    """One example per input (`_labeled_inputs`) with a label for one of the params' heads."""
    labeled = _labeled_inputs(rows, requests)
    values = [[labels.get(head) for head in params.heads] for _, _, labels in labeled]
    class_weights = []
    for k, head in enumerate(params.heads):
        known = [v[k] for v in values if v[k] is not None]
        positive = sum(bool(label) for label in known)
        if positive in (0, len(known)):
            raise UserError(
                f"the critic's {head} head needs rows of both classes; add sources to "
                "critic_probe.sources or labeled requests"
            )
        # scikit-learn's "balanced" weights, n / (2 n_class), as the probe's heads.
        harmless, harmful = compute_class_weight(
            "balanced", classes=np.array([False, True]), y=np.asarray(known, dtype=bool)
        )
        balanced = {True: float(harmful), False: float(harmless)}
        class_weights.append(balanced if params.class_balanced else {True: 1.0, False: 1.0})
    return [
        Example(
            input_ids=encode(request, reply),
            targets=[float(bool(v)) for v in labels],
            weights=[0.0 if v is None else class_weights[k][v] for k, v in enumerate(labels)],
        )
        for (request, reply, _), labels in zip(labeled, values, strict=True)
        if any(v is not None for v in labels)
    ]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean binary cross-entropy over the (row, head) cells; a cell of weight 0 (no
    label) counts for nothing."""
    losses = nn.functional.binary_cross_entropy_with_logits(
        logits.float(), targets, reduction="none"
    )
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


class _MaskedTrainer(Trainer):
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        targets, weights = inputs.pop("targets"), inputs.pop("weights")
        outputs = model(**inputs)
        loss = masked_bce(outputs.logits, targets, weights)
        return (loss, outputs) if return_outputs else loss


def _arguments(params: LoraSettings, seed: int, scratch: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=scratch,
        num_train_epochs=params.epochs,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.lr,
        lr_scheduler_type="linear",
        warmup_steps=0.05,  # a fraction of the steps
        weight_decay=0.0,
        # Random groups of rows of similar length (drawn from the seeded generator) keep the
        # padding, most of a CPU step's time, small.
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=False,  # the model is loaded in its dtype; autocast would change the numbers
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,  # a progress bar of optimizer steps: this is minutes of work
    )


def train_critic_lora(
    model: ResolvedModel,
    constitution_version: str,
    rows: list[LabeledResponse],
    requests: list[LabeledRequest],
    params: LoraSettings,
    seed: int,
    out: Path,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, Any]:
    """Fine-tune the critic on `rows` and `requests`, save it to `out`; return its metrics."""
    started = time.perf_counter()
    seed_everything(seed)
    classifier, tokenizer = build_classifier(model.load_from, params, dtype)
    examples = training_examples(Encoder(tokenizer, params), rows, requests, params)

    def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
        return {
            **pad_left(tokenizer.pad_token_id, [e.input_ids for e in batch]),
            "targets": torch.tensor([e.targets for e in batch]),
            "weights": torch.tensor([e.weights for e in batch]),
        }

    with tempfile.TemporaryDirectory() as scratch:
        trainer = _MaskedTrainer(
            model=classifier,
            args=_arguments(params, seed, scratch),
            # The length-grouped sampler reads each item's `input_ids`.
            train_dataset=[{"input_ids": e.input_ids, "example": e} for e in examples],  # type: ignore[arg-type]
            data_collator=lambda batch: collate([item["example"] for item in batch]),
            processing_class=tokenizer,
        )
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trained_on = dict(sorted(Counter(r.source for r in rows).items()))
    manifest = CriticLoraManifest(
        critic=model.model_id,
        constitution_version=constitution_version,
        params=params,
        trained_on={**trained_on, "requests": len(requests)},
        seed=seed,
    )
    save_critic_lora(out, classifier, manifest)
    return {
        "n": len(examples),
        "trained_on": manifest.trained_on,
        "head_rows": {
            head: sum(e.weights[k] > 0 for e in examples) for k, head in enumerate(params.heads)
        },
        "mean_tokens": round(float(np.mean([len(e.input_ids) for e in examples])), 1),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
