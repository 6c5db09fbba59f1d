"""Typed parameters: `params.yaml` is read once, strictly, into frozen dataclasses.

Every hyper-parameter lives in `params.yaml` only. Unknown keys, missing keys, wrong types and
out-of-range values are rejected with a message naming the key and what is allowed, so a typo
never silently falls back to a default.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from minicc.errors import UserError
from minicc.typecheck import build
from minicc.yaml_file import read_yaml

Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
CriticStyle = Literal["instruct", "base"]
CriticMethod = Literal["judge", "probe", "lora"]
CombineRule = Literal["min", "mean"]
Policy = Literal["best", "margin", "diverse"]
Scheduler = Literal["cosine", "linear", "constant"]
Category = Literal["adversarial", "borderline", "cooperative"]
"""A prompt's category; minicc/records.py declares the same Literal for the Prompt record."""
TrainMethod = Literal["sft", "dpo", "sft_dpo"]
SystemPrompt = Literal["none", "constitution"]
CutReplies = Literal["sentence", "open", "whole"]
RefusalPairs = Literal["none", "harmless", "mirrored"]
CRITIC_SOURCES = ("gptfuzz", "xstest", "jbb", "constructed", "contrast")
"""Source families of data/critic/train.jsonl (data/critic/README.md)."""
PROBE_HEADS = ("request_harmful", "response_harmful", "refusal", "on_task")
"""The probe's heads; minicc/probe.py's HeadName, which a test keeps equal."""


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """Range check for __post_init__; load_params adds the file name to the message."""
    if not condition:
        raise ValueError(f"{key} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class ModelsParams:
    generator: str
    """Model that writes candidates: a bundled alias, a local directory or a Hugging Face id."""
    critic: str
    """Model that scores candidates (same kinds of spec as `generator`)."""
    device: Device
    """`auto` picks CUDA, then Apple MPS, then CPU."""
    dtype: Precision
    """Precision of weights and compute. `auto`: bfloat16 where the hardware computes it
    natively (CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX), else float32."""
    trust_remote_code: list[str]
    """Model specs allowed to run code from their repository; empty means none."""
    reviser: str | None = None
    """Model that critiques and revises low-scored candidates (revise stage); null: the
    generator's spec."""


@dataclass(frozen=True)
class GenerateParams:
    num_candidates: int
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    """Rows per forward pass; changes results only at float-rounding level, so it is declared."""
    system_prompt: SystemPrompt = "none"
    """constitution: sample with the principles as a system prompt (a plain-text frame for base
    models) that nothing downstream sees - context distillation; none: the bare request."""

    def __post_init__(self) -> None:
        _require(
            self.num_candidates >= 1,
            "generate.num_candidates",
            "an integer >= 1",
            self.num_candidates,
        )
        _require(
            self.temperature > 0,
            "generate.temperature",
            "a number > 0 (sampling)",
            self.temperature,
        )
        _require(0 < self.top_p <= 1, "generate.top_p", "a number in (0, 1]", self.top_p)
        _require(
            1 <= self.max_new_tokens <= 4096,
            "generate.max_new_tokens",
            "an integer in [1, 4096]",
            self.max_new_tokens,
        )
        _require(self.batch_size >= 1, "generate.batch_size", "an integer >= 1", self.batch_size)


@dataclass(frozen=True)
class CritiqueParams:
    method: CriticMethod
    """judge: the critic model's zero-shot digit reading; probe: heads trained by train_critic
    on frozen features; lora: the critic model fine-tuned by train_critic (critic_lora.py)."""
    style: CriticStyle
    """instruct: chat-template judge prompt; base: few-shot plain-text completion prompt."""
    per_principle: bool
    """Score each principle separately and combine by `combine`."""
    combine: CombineRule
    """How per-principle scores become one score: the worst principle (min) or the mean."""
    explain: bool
    """Also generate a short rationale (slower; never used for the score)."""
    explain_max_new_tokens: int
    safe_threshold: float
    """A candidate is safe when its score is at least this."""
    min_digit_mass: float
    """Below this total probability on the digits 1-5 the candidate is left unscored."""
    max_response_tokens: int
    """Longer responses are cut to this many tokens before the critic reads them."""
    batch_size: int

    def __post_init__(self) -> None:
        _require(
            self.explain_max_new_tokens >= 1,
            "critique.explain_max_new_tokens",
            "an integer >= 1",
            self.explain_max_new_tokens,
        )
        _require(
            1 <= self.safe_threshold <= 5,
            "critique.safe_threshold",
            "a number in [1, 5]",
            self.safe_threshold,
        )
        _require(
            0 <= self.min_digit_mass < 1,
            "critique.min_digit_mass",
            "a number in [0, 1)",
            self.min_digit_mass,
        )
        _require(
            self.max_response_tokens >= 1,
            "critique.max_response_tokens",
            "an integer >= 1",
            self.max_response_tokens,
        )
        _require(self.batch_size >= 1, "critique.batch_size", "an integer >= 1", self.batch_size)
        _require(
            self.method == "judge" or not self.per_principle,
            "critique.per_principle",
            "false unless critique.method is 'judge' (a trained critic scores every principle "
            "at once)",
            self.per_principle,
        )


@dataclass(frozen=True)
class CriticProbeParams:
    layer: int
    """Decoder layer whose hidden states the probe reads (1 = first); layers above never run."""
    request_layer: int
    """Decoder layer the request head reads, with the request alone as a user turn."""
    l2: float
    """L2 penalty of the logistic heads (on standardised features)."""
    sources: list[str]
    """Training sources to use, by prefix of the rows' `source` (CRITIC_SOURCES)."""
    heads: list[str]
    """The probe's heads (minicc/probe.py HEAD_NAMES); `response_harmful` is required."""
    request_epochs: int
    """Epochs of the fine-tuned request classifier (minicc/request_classifier.py) averaged with
    the linear request head; 0: the linear head alone."""
    request_lr: float
    """Its learning rate (AdamW, linear decay to 0)."""
    gated_harm: bool
    """The response_harmful head is gated by the request head's P(harmful request): one linear
    head for harmful requests and one for harmless, blended (minicc/probe.py)."""

    @property
    def feature_layers(self) -> tuple[int, int]:
        """(layer, request_layer): the decoder layers `Critic.probe_features` reads."""
        return (self.layer, self.request_layer)

    def __post_init__(self) -> None:
        _require(self.layer >= 1, "critic_probe.layer", "an integer >= 1", self.layer)
        _require(
            self.request_layer >= 1,
            "critic_probe.request_layer",
            "an integer >= 1",
            self.request_layer,
        )
        _require(self.l2 > 0, "critic_probe.l2", "a number > 0", self.l2)
        _require(
            self.request_epochs >= 0,
            "critic_probe.request_epochs",
            "an integer >= 0",
            self.request_epochs,
        )
        _require(self.request_lr > 0, "critic_probe.request_lr", "a number > 0", self.request_lr)
        _require(
            bool(self.sources)
            and len(set(self.sources)) == len(self.sources)
            and set(self.sources) <= set(CRITIC_SOURCES),
            "critic_probe.sources",
            f"a non-empty list of distinct names from {', '.join(CRITIC_SOURCES)}",
            self.sources,
        )
        _require(
            "response_harmful" in self.heads
            and len(set(self.heads)) == len(self.heads)
            and set(self.heads) <= set(PROBE_HEADS),
            "critic_probe.heads",
            f"a list of distinct names from {', '.join(PROBE_HEADS)}, with response_harmful",
            self.heads,
        )
        _require(
            not self.gated_harm or "request_harmful" in self.heads,
            "critic_probe.gated_harm",
            "false when critic_probe.heads lacks request_harmful (the gate is its P(harmful "
            "request))",
            self.gated_harm,
        )


@dataclass(frozen=True)
class SelectParams:
    policy: Policy
    margin: float
    """margin policy: minimum best-minus-worst score for a prompt to yield a pair."""
    top_k: int
    """diverse policy: how many of the best distinct candidates to keep per prompt."""
    bottom_k: int
    """diverse policy: how many of the worst distinct candidates to keep per prompt."""
    min_gap: float
    """diverse policy: every kept good candidate outscores every kept bad one by at least this."""
    near_duplicate_threshold: float
    """Two texts whose word-set Jaccard similarity reaches this count as one (diverse policy)."""
    refusal_by_category: bool
    """A chosen reply refuses a harmful prompt and does not refuse a harmless one, by the
    prompt's category and `minicc.refusal.is_refusal` (minicc/selection.py); false: the critic
    alone decides."""

    def __post_init__(self) -> None:
        _require(0 <= self.margin <= 4, "select.margin", "a number in [0, 4]", self.margin)
        _require(self.top_k >= 1, "select.top_k", "an integer >= 1", self.top_k)
        _require(self.bottom_k >= 0, "select.bottom_k", "an integer >= 0", self.bottom_k)
        _require(0 <= self.min_gap <= 4, "select.min_gap", "a number in [0, 4]", self.min_gap)
        _require(
            0 < self.near_duplicate_threshold <= 1,
            "select.near_duplicate_threshold",
            "a number in (0, 1]",
            self.near_duplicate_threshold,
        )


@dataclass(frozen=True)
class CriticLoraParams:
    """The fine-tuned critic (critique.method lora). Its heads and training rows are
    `critic_probe.heads` and `critic_probe.sources`; replies are cut to
    `critique.max_response_tokens`."""

    depth: int
    """Decoder layers kept (the first ones); the layers above never run."""
    trained_layers: int
    """The top layers of those `depth` that get LoRA adapters."""
    r: int
    alpha: int
    lr: float
    epochs: int
    batch_size: int
    max_request_tokens: int
    """A longer request is cut to this many tokens."""
    class_balanced: bool
    """Weight each head's two classes equally in the loss, as the probe's heads do."""

    def __post_init__(self) -> None:
        _require(self.depth >= 1, "critic_lora.depth", "an integer >= 1", self.depth)
        _require(
            1 <= self.trained_layers <= self.depth,
            "critic_lora.trained_layers",
            f"an integer in [1, depth = {self.depth}]",
            self.trained_layers,
        )
        _require(self.r >= 1, "critic_lora.r", "an integer >= 1", self.r)
        _require(self.alpha >= 1, "critic_lora.alpha", "an integer >= 1", self.alpha)
        _require(0 < self.lr <= 1, "critic_lora.lr", "a number in (0, 1]", self.lr)
        _require(self.epochs >= 1, "critic_lora.epochs", "an integer >= 1", self.epochs)
        _require(self.batch_size >= 1, "critic_lora.batch_size", "an integer >= 1", self.batch_size)
        _require(
            self.max_request_tokens >= 1,
            "critic_lora.max_request_tokens",
            "an integer >= 1",
            self.max_request_tokens,
        )


@dataclass(frozen=True)
class ReviseParams:
    threshold: float
    """Candidates the critic scores below this (1-5 scale) are critiqued and revised."""
    num_revisions: int
    """Independent revisions per such candidate, each under its own drawn principle; 0: off."""
    rounds: int
    """Each round revises the previous round's revision; every round's revision is kept."""
    do_sample: bool
    """False: greedy critique and revision; True: temperature + nucleus sampling."""
    temperature: float
    top_p: float
    critique_max_new_tokens: int
    revision_max_new_tokens: int
    batch_size: int

    def __post_init__(self) -> None:
        _require(1 <= self.threshold <= 5, "revise.threshold", "a number in [1, 5]", self.threshold)
        _require(
            self.num_revisions >= 0,
            "revise.num_revisions",
            "an integer >= 0 (0 turns revise off)",
            self.num_revisions,
        )
        _require(self.rounds >= 1, "revise.rounds", "an integer >= 1", self.rounds)
        _require(self.temperature > 0, "revise.temperature", "a number > 0", self.temperature)
        _require(0 < self.top_p <= 1, "revise.top_p", "a number in (0, 1]", self.top_p)
        for key in ("critique_max_new_tokens", "revision_max_new_tokens"):
            value = getattr(self, key)
            _require(1 <= value <= 4096, f"revise.{key}", "an integer in [1, 4096]", value)
        _require(self.batch_size >= 1, "revise.batch_size", "an integer >= 1", self.batch_size)


@dataclass(frozen=True)
class SftParams:
    min_score: float
    """Chosen samples scoring at least this (critic scale 1-5) become training examples."""
    val_ratio: float
    """Share of prompts (not rows) held out for validation."""
    trim_refusals: bool
    """An example that refuses keeps its reply only up to the refusal (minicc.refusal)."""
    cut_replies: CutReplies
    """How a reply the token budget cut trains (minicc.sft): up to its last whole sentence and
    the end of the turn (`sentence`), whole without the end of the turn (`open`), or whole with
    it (`whole`: the fine-tune learns to stop mid-sentence)."""
    refusal_pairs: RefusalPairs
    """Preference pairs built from the examples for DPO's over-refusal (minicc.sft.refusal_pairs):
    none; each harmless prompt's answer over a refusal the examples teach (`harmless`); or that,
    and the refusal over the answer on the refusal's own harmful prompt (`mirrored`)."""

    def __post_init__(self) -> None:
        _require(1 <= self.min_score <= 5, "sft.min_score", "a number in [1, 5]", self.min_score)
        _require(0 < self.val_ratio < 1, "sft.val_ratio", "a number in (0, 1)", self.val_ratio)


@dataclass(frozen=True)
class TrainParams:
    lora_r: int
    """Rank of the LoRA update matrices."""
    lora_alpha: int
    """LoRA scaling numerator: the update is scaled by lora_alpha / lora_r."""
    lora_dropout: float
    lr: float
    """Peak learning rate of AdamW."""
    epochs: int
    batch_size: int
    """Examples per forward pass (per process under `accelerate launch`)."""
    grad_accum: int
    """Forward passes per optimizer step."""
    max_seq_len: int
    """Examples longer than this many tokens lose the end of their answer (counted in metrics)."""
    scheduler: Scheduler
    target_modules: Literal["auto"] | list[str]
    """`auto`: the attention projections of the model's architecture (see minicc/lora.py), or
    a list of module names for peft."""
    quantize_4bit: bool
    """QLoRA: load the frozen base model in 4-bit NF4; needs CUDA and `bitsandbytes`."""
    method: TrainMethod = "sft"
    """sft: TRL's SFTTrainer on the chosen samples; dpo: TRL's DPOTrainer on the preference
    pairs (reference: the base model, adapter disabled); sft_dpo: SFT, then DPO continuing from
    the SFT adapter (reference: a frozen copy of that adapter)."""
    dpo_beta: float = 0.1
    """DPO's KL strength: higher keeps the policy closer to its reference."""
    dpo_lr: float = 2e-4
    """Peak learning rate of the DPO phase (`lr` is the SFT phase's): at the SFT rate of 1e-3,
    DPO on the default run's pairs made a looping model (README "DPO at the new learning rate")."""
    dpo_epochs: int = 1
    """Passes over the preference pairs (the SFT part uses `epochs`)."""
    dpo_sft_weight: float = 0.0
    """Weight of a negative log-likelihood loss on the chosen reply added to DPO's (RPO, Pang et
    al. 2024; TRL's `sft` loss type); 0 is plain DPO. DPO alone can lower the chosen reply's
    likelihood with the rejected one's: on the opened revisions' pairs it taught a model that
    answers 292 of 320 eval prompts with nothing (README, "DPO on the opened revisions")."""
    checkpoint_steps: int = 10
    """Optimizer steps between the Trainer's checkpoints, which a killed run resumes from."""

    def __post_init__(self) -> None:
        _require(self.lora_r >= 1, "train.lora_r", "an integer >= 1", self.lora_r)
        _require(self.lora_alpha >= 1, "train.lora_alpha", "an integer >= 1", self.lora_alpha)
        _require(
            0 <= self.lora_dropout < 1,
            "train.lora_dropout",
            "a number in [0, 1)",
            self.lora_dropout,
        )
        _require(0 < self.lr <= 1, "train.lr", "a number in (0, 1]", self.lr)
        _require(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _require(self.grad_accum >= 1, "train.grad_accum", "an integer >= 1", self.grad_accum)
        _require(self.max_seq_len >= 16, "train.max_seq_len", "an integer >= 16", self.max_seq_len)
        _require(self.dpo_beta > 0, "train.dpo_beta", "a number > 0", self.dpo_beta)
        _require(0 < self.dpo_lr <= 1, "train.dpo_lr", "a number in (0, 1]", self.dpo_lr)
        _require(self.dpo_epochs >= 1, "train.dpo_epochs", "an integer >= 1", self.dpo_epochs)
        _require(
            0 <= self.dpo_sft_weight <= 100,
            "train.dpo_sft_weight",
            "a number in [0, 100]",
            self.dpo_sft_weight,
        )
        _require(
            self.checkpoint_steps >= 1,
            "train.checkpoint_steps",
            "an integer >= 1",
            self.checkpoint_steps,
        )
        if isinstance(self.target_modules, list):
            _require(
                len(self.target_modules) > 0 and all(m.strip() for m in self.target_modules),
                "train.target_modules",
                "'auto' or a non-empty list of module names",
                self.target_modules,
            )


@dataclass(frozen=True)
class EvaluateParams:
    do_sample: bool
    """False: greedy decoding (deterministic, one response per prompt); True: sampling."""
    temperature: float
    top_p: float
    max_new_tokens: int
    num_samples: int
    """Responses per prompt (sampling only); their scores are averaged per prompt."""
    batch_size: int
    critic: str = "same"
    """Who judges compare: `same` (the critic that selected the training data), a probe file
    (`.json`, trained by train_critic on `models.critic`) or a model spec (a zero-shot judge
    with the `critique` settings); see minicc/eval_critic.py."""

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "evaluate.temperature", "a number > 0", self.temperature)
        _require(0 < self.top_p <= 1, "evaluate.top_p", "a number in (0, 1]", self.top_p)
        _require(
            1 <= self.max_new_tokens <= 4096,
            "evaluate.max_new_tokens",
            "an integer in [1, 4096]",
            self.max_new_tokens,
        )
        _require(self.num_samples >= 1, "evaluate.num_samples", "an integer >= 1", self.num_samples)
        _require(
            self.do_sample or self.num_samples == 1,
            "evaluate.num_samples",
            "1 when evaluate.do_sample is false (greedy responses are identical)",
            self.num_samples,
        )
        _require(self.batch_size >= 1, "evaluate.batch_size", "an integer >= 1", self.batch_size)
        _require(
            self.critic.strip() == self.critic != "",
            "evaluate.critic",
            "same, a probe file (.json) or a model spec, without surrounding spaces",
            self.critic,
        )


@dataclass(frozen=True)
class PromptSourceParams:
    """Where a prompt set comes from, read by `datasets` (minicc/prompt_source.py)."""

    path: str | None
    """A local .jsonl, .csv or .parquet file, or a Hugging Face dataset id (`org/name`); null:
    the committed pool that dvc.yaml passes (data/prompt_pool/)."""
    config: str | None
    """Hub datasets only: the configuration (subset); null: the default one."""
    split: str
    """The split to read; a local file has one, `train`."""
    revision: str | None
    """Hub datasets only: the commit, tag or branch; pin a commit so the prompts cannot drift."""
    prompt_column: str
    id_column: str | None
    """null: ids are `<source name>-<row number>`."""
    category_column: str | None
    """Column holding adversarial, borderline or cooperative; null: `category` for every row."""
    category: Category | None
    """The category of every row when `category_column` is null."""
    source_column: str | None
    """Column holding each row's attribution (`advbench:17`); null: `<source>:<row number>`."""
    max_per_category: int | dict[Category, int | None] | None
    """At most this many prompts per category, drawn by `seed`; null: every prompt. A mapping
    caps each category on its own (`{adversarial: 60, borderline: 130, cooperative: 60}`; null
    for one category: all of its prompts) and must name all three."""

    def __post_init__(self) -> None:
        _require(
            (self.category_column is None) != (self.category is None),
            "prompts.*.category",
            "set exactly when category_column is null (one category for the whole source)",
            self.category,
        )
        caps = self.max_per_category
        if isinstance(caps, dict):
            _require(
                set(caps) == set(get_args(Category)),
                "prompts.*.max_per_category",
                "a mapping naming every category (adversarial, borderline, cooperative)",
                caps,
            )
            _require(
                all(cap is None or cap >= 1 for cap in caps.values()),
                "prompts.*.max_per_category",
                "a mapping of each category to null or an integer >= 1",
                caps,
            )
        else:
            _require(
                caps is None or caps >= 1,
                "prompts.*.max_per_category",
                "null or an integer >= 1 (or a mapping of each category to one)",
                caps,
            )


@dataclass(frozen=True)
class PromptsParams:
    train: PromptSourceParams
    """The prompts `generate` answers (params.yaml caps them per category)."""
    eval: PromptSourceParams
    """The held-out prompts `evaluate` answers; must hold harmful and harmless ones."""


@dataclass(frozen=True)
class Params:
    seed: int
    """Seeds the policy's side: prompt caps, sampling, revision, SFT split, LoRA training and
    the comparison's bootstrap."""
    critic_seed: int
    """Seeds the critic's side (train_critic, critique, critic_eval), so that a sweep over
    `seed` measures every policy with one critic."""
    models: ModelsParams
    generate: GenerateParams
    critique: CritiqueParams
    critic_probe: CriticProbeParams
    critic_lora: CriticLoraParams
    select: SelectParams
    sft: SftParams
    revise: ReviseParams
    train: TrainParams
    evaluate: EvaluateParams
    prompts: PromptsParams


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate the whole params file; every stage calls this once at start-up."""
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    try:
        params: Params = build(Params, raw, str(path))
    except ValueError as error:
        raise UserError(str(error)) from None
    for key, value in (("seed", params.seed), ("critic_seed", params.critic_seed)):
        if value < 0:
            raise UserError(f"{path}: key '{key}' must be an integer >= 0, got {value!r}")
    return params
