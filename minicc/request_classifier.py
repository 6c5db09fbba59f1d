"""The request head's fine-tuned half: all-MiniLM-L6-v2 fine-tuned to tell harmful requests.

The probe's linear request head reads frozen features (the request's sentence embedding and the
critic model's states over it), and frozen features read topic more than intent: it called "How
do I make crack at home?" and "How do I best hang myself?" harmless (0.19, 0.28) because nothing
in a fixed embedding separates "kill a process" from "kill a person" the way a word's context
does. Fine-tuning the embedding model on the same labeled requests (the authored contrast pairs
are most of them: one wording, harmful and harmless) lets attention weigh the word that makes a
request harmful. The two halves are combined by averaging their logits
(`minicc.probe.combined_request`): their errors differ, and on the request head's own k-fold
estimate the average beats each half.

Why a hand-written loop and not transformers' `Trainer`: the model is a 22M-parameter encoder
with one linear head, trained for a few epochs on about 1,200 short texts; the loop is twenty
lines, seeded and deterministic on one machine, where `Trainer` would add a classification
wrapper, an output directory and its own logging for the same AdamW with linear decay.

The word-embedding matrix (half the parameters) stays frozen, as the package ships it, so only
the rest is saved: the directory holds `weights.safetensors` and `classifier.json` (settings and
the weights' digest), written last. Scoring reads one request per pass (no padding), so a
request's logit does not depend on which others share its batch: a resumed stage scores as an
uninterrupted one. It trains and scores on the CPU whatever the critic's device, and scores in
float32: a 22M-parameter encoder over a few hundred distinct requests per stage takes seconds
there, and float32 keeps its logits the same across devices' half-precision kernels.
Training, six fits per train_critic (the final one and the k-fold's five), runs under bfloat16
autocast where the CPU computes bfloat16 natively (`training_precision`): half the time of
float32 there (about 17 s a fit against 32 s on the committed data), with the same k-fold AUROC
(README's train_critic timings); the weights stay float32, so the saved classifier scores in
float32 either way.
"""

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors.torch import load, save
from sklearn.utils.class_weight import compute_class_weight
from tqdm import tqdm

from minicc.arrays import BoolArray, FloatArray
from minicc.embedding import embedder_dir
from minicc.errors import UserError
from minicc.jsonl import json_text, publish_directory
from minicc.models import native_bfloat16, quiet_loading
from minicc.padding import masked_mean
from minicc.params import Precision
from minicc.typecheck import build

if TYPE_CHECKING:
    from transformers.trainer_pt_utils import LengthGroupedSampler

DIRECTORY = "request_classifier"
"""Its directory's name, beside the probe file it belongs to."""
MANIFEST = "classifier.json"
WEIGHTS = "weights.safetensors"
MAX_TOKENS = 64
"""A longer request is read from its start (requests are short: the longest of the training
set is under 60 tokens)."""
BATCH_SIZE = 32
WEIGHT_DECAY = 0.01
FROZEN = "encoder.embeddings.word_embeddings.weight"


TrainingPrecision = Literal["bfloat16", "float32"]


@dataclass(frozen=True)
class ClassifierSettings:
    epochs: int
    lr: float
    seed: int
    precision: TrainingPrecision
    """Of the training's forward passes (bfloat16 autocast or float32); see `training_precision`."""


def training_precision(setting: Precision) -> TrainingPrecision:
    """The classifier's training precision under `models.dtype`: bfloat16 autocast where the CPU
    computes bfloat16 natively and the setting allows it (`auto`, `bfloat16`), else float32 (an
    emulated bfloat16 would be slower, and CPU float16 autocast is slower still)."""
    if setting == "bfloat16" or (setting == "auto" and native_bfloat16(torch.device("cpu"))):
        return "bfloat16"
    return "float32"


class _Model(torch.nn.Module):
    """The encoder, mean-pooled as for sentence embeddings, and one logit."""

    def __init__(self) -> None:
        from transformers import AutoModel

        super().__init__()
        with quiet_loading():
            self.encoder = AutoModel.from_pretrained(embedder_dir(), dtype=torch.float32)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)

    def forward(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**encoded).last_hidden_state
        return self.head(masked_mean(hidden, encoded["attention_mask"])).squeeze(-1)


def _trained_state(model: _Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != FROZEN}


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedder_dir())


def _digest(weights: bytes) -> str:
    return hashlib.sha256(weights).hexdigest()[:10]


class RequestClassifier:
    """A fine-tuned request classifier, ready to score; `digest` names its weights."""

    def __init__(
        self, model: _Model, tokenizer: Any, settings: ClassifierSettings, digest: str
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.digest = digest
        self._known: dict[str, float] = {}

    @torch.inference_mode()
    def logits(self, requests: list[str]) -> FloatArray:
        """The logit of P(harmful request) of each request, in order; each distinct request is
        read once, alone (module docstring)."""
        for text in dict.fromkeys(requests):
            if text not in self._known:
                encoded = self.tokenizer(
                    [text], truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
                )
                self._known[text] = float(self.model(dict(encoded))[0])
        return np.asarray([self._known[text] for text in requests], dtype=np.float64)


def length_grouped_sampler(lengths: list[int], seed: int) -> "LengthGroupedSampler":
    """Transformers' `group_by_length` order for requests of these token `lengths`: each epoch
    shuffles the requests, cuts them into mega-batches of a few hundred and sorts each by length,
    so a batch holds requests of similar length. On the committed training set random batches
    of 32 padded to 1.7 times the requests' real tokens, these to 1.1 (README's train_critic
    timings say what that saved)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(
        BATCH_SIZE, lengths=lengths, generator=torch.Generator().manual_seed(seed)
    )


def training_batches(sampler: "LengthGroupedSampler") -> list[list[int]]:
    """One epoch's batches of request indices: the sampler's order cut into batches, which are
    then shuffled by the sampler's generator. The sampler runs each mega-batch from its longest
    requests to its shortest; in that order the classifier's 5-fold estimate fell by about 0.003
    AUROC on two seeds (README)."""
    order = list(sampler)
    batches = [order[start : start + BATCH_SIZE] for start in range(0, len(order), BATCH_SIZE)]
    return [batches[i] for i in torch.randperm(len(batches), generator=sampler.generator)]


def fit_request_classifier(
    requests: list[str],
    labels: BoolArray,
    settings: ClassifierSettings,
    description: str = "request classifier",
) -> RequestClassifier:
    """Fine-tune on labeled requests: class-balanced cross-entropy (as the linear heads), AdamW
    with linear decay, length-grouped batches shuffled from `settings.seed`; a progress bar of
    optimizer steps named `description` (half a minute of work on two cores)."""
    if labels.all() or not labels.any():
        raise ValueError("the request classifier needs harmful and harmless requests")
    torch.manual_seed(settings.seed)
    model = _Model()
    model.train()
    tokenizer = _tokenizer()
    lengths = tokenizer(requests, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    sampler = length_grouped_sampler([len(ids) for ids in lengths], settings.seed)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=WEIGHT_DECAY)
    steps = settings.epochs * -(-len(requests) // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    # scikit-learn's "balanced" weights, n / (2 n_class), as the linear heads' LogisticRegression.
    balanced = compute_class_weight("balanced", classes=np.array([False, True]), y=labels)
    class_weight = torch.tensor(balanced, dtype=torch.float32)
    progress = tqdm(total=steps, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=settings.precision == "bfloat16")
    for _ in range(settings.epochs):
        for batch in training_batches(sampler):
            encoded = tokenizer(
                [requests[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            target = torch.tensor(labels[batch], dtype=torch.float32)
            with autocast:
                logits = model(dict(encoded)).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="none"
            )
            loss = (loss * class_weight[target.long()]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update()
    progress.close()
    weights = save(_trained_state(model))
    return RequestClassifier(model, tokenizer, settings, _digest(weights))


def save_request_classifier(directory: Path, classifier: RequestClassifier) -> None:
    """Write the classifier's directory whole (its manifest last)."""

    def fill(staging: Path) -> str:
        weights = save(_trained_state(classifier.model))
        (staging / WEIGHTS).write_bytes(weights)
        return json_text({"digest": _digest(weights), **asdict(classifier.settings)}).rstrip("\n")

    publish_directory(directory, MANIFEST, fill)


def load_request_classifier(directory: Path, digest: str) -> RequestClassifier:
    """The classifier saved in `directory`; its weights must be those the probe was fitted with
    (`digest`), else an error that says to retrain."""
    manifest, weights_file = directory / MANIFEST, directory / WEIGHTS
    if not manifest.is_file() or not weights_file.is_file():
        raise UserError(
            f"{directory}: the probe's fine-tuned request classifier is missing; keep the "
            "directory beside the probe file, or rerun `dvc repro train_critic`"
        )
    weights = weights_file.read_bytes()
    if _digest(weights) != digest:
        raise UserError(
            f"{weights_file}: not the request classifier the probe was trained with (digest "
            f"{_digest(weights)}, the probe names {digest}); rerun `dvc repro train_critic`"
        )
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        settings = build(
            ClassifierSettings, {k: v for k, v in raw.items() if k != "digest"}, str(manifest)
        )
    except (ValueError, AttributeError) as error:
        raise UserError(f"{manifest}: not a request classifier's manifest ({error})") from None
    model = _Model()
    missing, unexpected = model.load_state_dict(load(weights), strict=False)
    if missing != [FROZEN] or unexpected:
        raise UserError(f"{weights_file}: not a request classifier's weights")
    return RequestClassifier(model, _tokenizer(), settings, digest)
