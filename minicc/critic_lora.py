"""The fine-tuned critic: the critic model, cut to its lower layers, LoRA-tuned as a classifier.

One sequence-classification model reads a (request, reply) pair through the critic model's chat
template (user = request, assistant = reply; both neutralised and cut to a number of tokens) and
gives one logit per head of the probe (minicc/probe.py): `request_harmful`, `response_harmful`,
`refusal`, `on_task`. `request_harmful` is read from the request's turn alone (one more, short,
input per distinct request), as the probe's request head reads nothing of the reply.
The score is the probe's: the expectation over the rubric's points of `rubric_distribution` of
the four probabilities; a head not trained takes `probe.DEFAULTS`, and a reply with nothing of
its request in it (embedding cosine, `minicc.rubric.on_task_by_rule`) has t = 0, as in the probe.
Training is in minicc/critic_lora_training.py.

Only the top `trained_layers` of the first `depth` decoder layers get LoRA adapters (on every
linear module), plus the classification head, trained whole and in float32 (peft's
`modules_to_save`); the layers above `depth` never run. The constitution is not in the input (too
long to train on a CPU), so the saved critic records the constitution version it was trained for
and refuses to score under another, like `Probe.check_matches`.

A saved critic is a directory: the trained weights (adapters and head) and `manifest.json`,
written last, so a directory with a manifest is complete. The manifest holds the resolved
`LoraSettings`, from which loading rebuilds the same model around the weights.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from minicc.arrays import FloatArray
from minicc.batching import length_sorted_batches
from minicc.errors import UserError
from minicc.jsonl import json_text, publish_directory
from minicc.models import ResolvedModel, quiet_loading
from minicc.neutralise import neutralise
from minicc.params import CriticLoraParams, Params
from minicc.probe import DEFAULTS, HEAD_NAMES, rubric_distribution
from minicc.rubric import on_task_by_rule
from minicc.typecheck import build

MANIFEST = "manifest.json"
WEIGHTS = "critic_weights.safetensors"


@dataclass(frozen=True)
class LoraSettings(CriticLoraParams):
    """Everything that shapes the fine-tuned critic: `critic_lora` plus the heads and the reply
    cut it shares with the probe; recorded in the manifest, which rebuilds the model from it."""

    max_response_tokens: int
    """A longer reply is cut to this many tokens, as critique.max_response_tokens cuts it."""
    heads: list[str]
    """Heads trained (of HEAD_NAMES; response_harmful required), in the logits' order."""


def lora_settings(params: Params) -> LoraSettings:
    """The settings the params file gives (validated there)."""
    return LoraSettings(
        **asdict(params.critic_lora),
        max_response_tokens=params.critique.max_response_tokens,
        heads=list(params.critic_probe.heads),
    )


@dataclass(frozen=True)
class CriticLoraManifest:
    critic: str
    """Resolved id of the critic model the adapters were trained on."""
    constitution_version: str
    params: LoraSettings
    trained_on: dict[str, int]
    """Training rows per source, and the labeled requests under `requests`."""
    seed: int


def _truncate(model: Any, depth: int) -> None:
    """Keep the first `depth` decoder layers; the config says so too."""
    layers = model.model.layers
    if depth > len(layers):
        raise UserError(f"critic depth {depth} exceeds the model's {len(layers)} layers")
    model.model.layers = layers[:depth]
    model.config.num_hidden_layers = depth
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:depth]


def _float32_head(model: nn.Module) -> None:
    """The `score` head in float32, its input cast to match: the logits (and the loss on them)
    are float32, and the optimizer updates the head in full precision in a bfloat16 model."""
    for name, module in model.named_modules():
        if name.endswith(("score.modules_to_save.default", "score.original_module")):
            module.float()
            module.register_forward_pre_hook(lambda _module, args: (args[0].float(),))


def build_classifier(load_from: str, params: LoraSettings, dtype: torch.dtype) -> tuple[Any, Any]:
    """The truncated classifier with fresh adapters and head (drawn from torch's generator),
    and its left-padding tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(load_from)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A causal LM's checkpoint never holds the classification head, so transformers reports it
    # MISSING with "Consider training" at every load, also when load_critic_lora is about to
    # load the trained head from the adapter file. That report is silenced, and any other
    # missing weight is an error here instead.
    with quiet_loading():
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            load_from,
            num_labels=len(params.heads),
            dtype=dtype,
            pad_token_id=tokenizer.pad_token_id,
            output_loading_info=True,
        )
    missing = sorted(k for k in loading["missing_keys"] if not k.startswith("score."))
    if missing:
        raise UserError(
            f"{load_from}: the critic model's checkpoint lacks {missing[:3]}; it cannot be "
            "read as a sequence classifier"
        )
    _truncate(model, params.depth)
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=0.0,
        # Every linear module of a decoder layer, by name: peft's "all-linear" is a pattern,
        # which layers_to_transform does not accept.
        target_modules=sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.model.layers.named_modules()
                if isinstance(module, nn.Linear)
            }
        ),
        layers_to_transform=list(range(params.depth - params.trained_layers, params.depth)),
        layers_pattern="layers",
        modules_to_save=["score"],
        task_type="SEQ_CLS",
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    _float32_head(peft_model)
    return peft_model, tokenizer


class Encoder:
    """(request, reply) -> token ids through the chat template, each part cut in tokens."""

    def __init__(self, tokenizer: Any, params: LoraSettings):
        self.tokenizer = tokenizer
        self.special = list(tokenizer.all_special_tokens)
        self.limits = (params.max_request_tokens, params.max_response_tokens)

    def _cut(self, text: str, limit: int) -> str:
        text = neutralise(text, self.special)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= limit else self.tokenizer.decode(ids[:limit]) + " ..."

    def __call__(self, request: str, reply: str | None) -> list[int]:
        """The chat of the request and reply; for a reply of None, the request's turn alone."""
        chat = [{"role": "user", "content": self._cut(request, self.limits[0])}]
        if reply is not None:
            chat.append({"role": "assistant", "content": self._cut(reply, self.limits[1])})
        text: str = self.tokenizer.apply_chat_template(chat, tokenize=False)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids


def pad_left(pad_id: int, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
    """Left-padded ids and attention mask: the last position is each row's last token, which
    the classifier reads."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        mask[row, width - len(sequence) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


class LoraCritic:
    """A trained critic, ready to score (request, reply) pairs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        manifest: CriticLoraManifest,
        batch_size: int,
        digest: str,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.batch_size = batch_size
        self.digest = digest
        """Short hash of the trained weights, for each critique's `critic` field."""
        self.encode = Encoder(tokenizer, manifest.params)

    @torch.inference_mode()
    def _probabilities(self, inputs: list[tuple[str, str | None]]) -> FloatArray:
        """(inputs, heads) sigmoid of the logits, in batches of similar length."""
        self.model.eval()
        encoded = [self.encode(request, reply) for request, reply in inputs]
        probabilities = np.zeros((len(inputs), len(self.manifest.params.heads)))
        batches = length_sorted_batches(
            range(len(inputs)), lambda i: len(encoded[i]), lambda i: f"{i:09d}", self.batch_size
        )
        device = next(self.model.parameters()).device
        for batch in batches:
            padded = pad_left(self.tokenizer.pad_token_id, [encoded[i] for i in batch.items])
            logits = self.model(**{k: v.to(device) for k, v in padded.items()}).logits
            probabilities[batch.items] = torch.sigmoid(logits.float()).cpu().numpy()
        return probabilities

    def head_probabilities(self, pairs: list[tuple[str, str]]) -> dict[str, FloatArray]:
        """Each head's probability per pair (HEAD_NAMES; one not trained takes its default).

        `request_harmful` is read from the request alone, as it was trained.
        """
        heads = self.manifest.params.heads
        requests = sorted({request for request, _ in pairs})
        alone: list[tuple[str, str | None]] = (
            [(request, None) for request in requests] if "request_harmful" in heads else []
        )
        probabilities = self._probabilities([*pairs, *alone])
        values = {
            name: probabilities[: len(pairs), heads.index(name)]
            if name in heads
            else np.full(len(pairs), DEFAULTS[name])
            for name in HEAD_NAMES
        }
        if alone:
            row = {request: len(pairs) + k for k, request in enumerate(requests)}
            column = heads.index("request_harmful")
            values["request_harmful"] = probabilities[[row[r] for r, _ in pairs], column]
        return values

    def distribution(self, pairs: list[tuple[str, str]], cosines: FloatArray) -> FloatArray:
        """(rows, 5) probabilities of the rubric's points 1..5 (probe.rubric_distribution);
        `cosines`: each pair's request-reply embedding cosine, for the rubric's rule on a reply
        with nothing of its request in it (`minicc.rubric.on_task_by_rule`)."""
        p = self.head_probabilities(pairs)
        return rubric_distribution(
            p["request_harmful"],
            p["response_harmful"],
            p["refusal"],
            on_task_by_rule(p["on_task"], cosines),
        )


def save_critic_lora(out: Path, model: Any, manifest: CriticLoraManifest) -> None:
    """The trained weights, then the manifest, into `out` atomically."""

    def write(staging: Path) -> str:
        save_file(get_peft_model_state_dict(model), staging / WEIGHTS)
        return json_text(asdict(manifest)).rstrip("\n")

    publish_directory(out, MANIFEST, write)


def read_manifest(path: Path) -> CriticLoraManifest:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"{path}: no {MANIFEST}: the critic was never trained there or its training did not "
            "finish; retrain it with `dvc repro train_critic`"
        )
    try:
        manifest: CriticLoraManifest = build(
            CriticLoraManifest, json.loads(manifest_path.read_text(encoding="utf-8")), str(path)
        )
    except ValueError as error:
        raise UserError(f"{manifest_path}: not a critic manifest ({error})") from None
    return manifest


def check_manifest(
    path: Path, constitution_version: str, heads: list[str], critic: str | None = None
) -> CriticLoraManifest:
    """The manifest of the critic saved at `path`, refused unless it was trained for
    `constitution_version` with exactly `heads` (and, when given, on the critic model `critic`).
    Reads no weights, so a stage can check it before loading any model."""
    manifest = read_manifest(path)
    now = {"constitution_version": constitution_version}
    if critic is not None:
        now["critic"] = critic
    wrong = [
        f"{key} {getattr(manifest, key)!r} (now {value!r})"
        for key, value in now.items()
        if getattr(manifest, key) != value
    ]
    if sorted(manifest.params.heads) != sorted(heads):
        wrong.append(f"heads {sorted(manifest.params.heads)} (asked for {sorted(heads)})")
    if wrong:
        raise UserError(
            f"{path}: the critic was trained for another setup: {', '.join(wrong)}; retrain it "
            "with `dvc repro train_critic`"
        )
    return manifest


def load_critic_lora(
    path: Path,
    model: ResolvedModel,
    constitution_version: str,
    heads: list[str],
    batch_size: int,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | None = None,
) -> LoraCritic:
    """The critic saved at `path` on `device` (default the CPU), refused unless it was trained
    on `model`, for `constitution_version`, with exactly `heads`."""
    manifest = check_manifest(path, constitution_version, heads, model.model_id)
    peft_model, tokenizer = build_classifier(model.load_from, manifest.params, dtype)
    weights = (path / WEIGHTS).read_bytes()
    loaded: Any = set_peft_model_state_dict(peft_model, load(weights))
    if loaded.unexpected_keys:
        raise UserError(
            f"{path / WEIGHTS}: weights {loaded.unexpected_keys[:3]} do not fit the model its "
            f"{MANIFEST} describes; retrain it with `dvc repro train_critic`"
        )
    peft_model.to(device or torch.device("cpu"))
    digest = hashlib.sha256(weights).hexdigest()[:10]
    return LoraCritic(peft_model, tokenizer, manifest, batch_size, digest)
