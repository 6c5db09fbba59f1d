"""One typed record per artifact row, and the loaders that check the rows make sense together.

Field names here are the JSONL schema: `data/prompts.jsonl` holds `Prompt`s, the generate stage
writes `Candidate`s, critique writes `Critique`s, select writes `Selected` samples and
`PreferencePair`s.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar, get_args

from minicc.errors import UserError
from minicc.jsonl import read_numbered_records

Category = Literal["adversarial", "borderline", "cooperative"]
CATEGORIES: tuple[str, ...] = get_args(Category)
FinishReason = Literal["eos", "length"]


@dataclass(frozen=True)
class Prompt:
    id: str
    """Stable identifier, unique within a prompt file."""
    prompt: str
    """The user's request, sent as the user turn (instruct models) or plain text (base models)."""
    category: Category
    """adversarial (should be refused), borderline (looks risky, is fine) or cooperative."""
    source: str
    """Where the prompt came from, e.g. `advbench:17`; attribution lives in data/README.md."""


@dataclass(frozen=True)
class Candidate:
    prompt_id: str
    candidate_id: str
    """`<prompt_id>/<k>` for the k-th sampled response to that prompt."""
    prompt: str
    category: Category
    response: str
    """Only the newly generated text: never contains the prompt."""
    num_tokens: int
    """Generated tokens, not counting the end-of-sequence token or padding."""
    finish_reason: FinishReason
    generator: str
    """Resolved model id, including the weights' hash for bundled models."""


@dataclass(frozen=True)
class Critique:
    prompt_id: str
    candidate_id: str
    prompt: str
    category: Category
    response: str
    generator: str
    critic: str
    """Resolved critic model id."""
    constitution_version: str
    style: Literal["instruct", "base"]
    scored: bool
    """False when the critic could not score this candidate; then `score` and `safe` are null."""
    unscored_reason: str | None
    probabilities: list[float] | None
    """P(1)..P(5) of the rubric's points: the judge's digit probabilities renormalised over the
    five digits (combined if per-principle), or the probe's rubric distribution."""
    digit_mass: float | None
    """Total probability the critic put on the five digits before renormalising."""
    score: float | None
    """Expected score on the 1-5 scale: sum of k * P(k)."""
    safe: bool | None
    """Judge: score >= critique.safe_threshold. Probe: P(harmful help) = P(1) < 0.5."""
    principle_scores: dict[str, float | None] | None
    """Per-principle expected scores when `critique.per_principle` is on."""
    rationale: str | None
    """Short free-text explanation when `critique.explain` is on; never parsed for the score."""


@dataclass(frozen=True)
class Selected:
    prompt_id: str
    candidate_id: str
    prompt: str
    category: Category
    response: str
    score: float
    safe: bool
    role: Literal["chosen", "rejected"]
    """chosen: an example to imitate; rejected: an example to avoid (contrastive policies)."""
    policy: Literal["best", "margin", "diverse"]


@dataclass(frozen=True)
class PreferencePair:
    """The `prompt`/`chosen`/`rejected` format that TRL's DPO trainer reads, plus provenance."""

    prompt: str
    chosen: str
    rejected: str
    prompt_id: str
    category: Category
    chosen_id: str
    rejected_id: str
    chosen_score: float
    rejected_score: float


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_Identified)


def check_identified_rows(
    path: Path, numbered: list[tuple[int, R]], nonblank: tuple[str, ...], what: str
) -> list[R]:
    """Reject an empty file, blank text fields and duplicate ids; return the records."""
    if not numbered:
        raise UserError(f"{path}: no {what}; the file must hold at least one JSON line")
    seen: set[str] = set()
    for line, record in numbered:
        for name in nonblank:
            if not getattr(record, name).strip():
                raise UserError(f"{path}:{line}: field {name!r} is empty (id {record.id!r})")
        if record.id in seen:
            raise UserError(f"{path}:{line}: duplicate id {record.id!r}")
        seen.add(record.id)
    return [record for _, record in numbered]


def load_prompts(path: Path) -> list[Prompt]:
    """Read a prompt file, rejecting empty files, blank prompts and duplicate ids."""
    return check_identified_rows(
        path, read_numbered_records(path, Prompt), ("id", "prompt"), "prompts"
    )
