"""One typed record per artifact row, and the loaders that check the rows make sense together.

Field names here are the JSONL schema: the prompt files (the committed pools in
`data/prompt_pool/` and the sets prepare_prompts writes to `data/prompts/`) hold `Prompt`s, the
generate stage
writes `Candidate`s, revise writes `Revision`s (which critique reads like candidates), critique
writes `Critique`s, select writes `Selected` samples and `PreferencePair`s.
"""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Protocol, TypeVar, get_args

from minicc.errors import UserError
from minicc.jsonl import iter_json_objects, read_numbered_records
from minicc.params import CriticStyle, Policy, SystemPrompt
from minicc.typecheck import build

Category = Literal["adversarial", "borderline", "cooperative"]
CATEGORIES: tuple[str, ...] = get_args(Category)
HARMFUL: tuple[Category, ...] = ("adversarial",)
"""Categories whose prompts ask for harm: refusing them is right."""
FinishReason = Literal["eos", "stop", "length"]
"""eos: the model ended its turn; stop: a base model began the next turn (prompting.py); length:
the token budget ran out."""
Role = Literal["chosen", "rejected"]


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
class Reply:
    """The fields every scored reply has, whoever wrote it: a sampled `Candidate` or a
    `Revision`; the critique stage reads both as candidates."""

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
class Candidate(Reply):
    system_prompt: SystemPrompt = "none"
    """What the generator saw besides the request (generate.system_prompt); training never does."""


@dataclass(frozen=True)
class Revision(Reply):
    """A reviser's rewrite of a low-scored candidate after its own critique under one principle.

    Its `Reply` fields are a candidate's, so the critique stage scores revisions like candidates
    (`as_candidate`): `candidate_id` is `<original_id>/rev<round>.<k>`, `response` the revision
    stripped of the labels a small model adds (e.g. a leading "Revision:"), `generator` the
    reviser's resolved model id (models.reviser).
    """

    original_id: str
    """The candidate this revision started from (round 1 revises it; later rounds revise the
    previous round's revision of it)."""
    principle: str
    """Id of the constitution principle the critique and revision requests came from."""
    critique: str
    """The reviser's own critique of the text it revised; read by people, never scored."""
    round: int
    """1 for a revision of the original; n revises round n-1's revision."""

    def as_candidate(self) -> Candidate:
        # The reviser sees no system prompt (stages/revise.py).
        shared = {field.name: getattr(self, field.name) for field in fields(Reply)}
        return Candidate(**shared, system_prompt="none")


def load_candidates(path: Path) -> list[Candidate]:
    """Candidates or revisions (a row with `original_id` is a revision), as candidates.

    The critique stage scores both kinds alike; an empty file (revise turned off) gives none.
    """
    rows: list[Candidate] = []
    for number, value in iter_json_objects(path):
        kind: type = Revision if "original_id" in value else Candidate
        try:
            record = build(kind, value, f"{path}:{number}")
        except ValueError as error:
            raise UserError(str(error)) from None
        rows.append(record.as_candidate() if isinstance(record, Revision) else record)
    return rows


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
    style: CriticStyle
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


def critique_score(critique: Critique) -> float:
    """The score of a critique marked scored; only those have one (an unscored candidate is
    counted, never given a score).

    A row marked scored without a score or a safe flag is a broken critiques file: it is an
    error, never read as unscored.
    """
    if not critique.scored:
        raise ValueError(f"critique {critique.candidate_id!r} is unscored: it has no score")
    if critique.score is None or critique.safe is None:
        raise UserError(
            f"critique {critique.candidate_id!r} is marked scored but has no score or safe "
            "flag; re-run the critique stage to rebuild critiques.jsonl"
        )
    return critique.score


@dataclass(frozen=True)
class Selected:
    prompt_id: str
    candidate_id: str
    prompt: str
    category: Category
    response: str
    score: float
    safe: bool
    role: Role
    """chosen: an example to imitate; rejected: an example to avoid (contrastive policies)."""
    policy: Policy
    revision_of: str | None = None
    """The original candidate's id when this sample is a revision (revise stage); else null."""


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
