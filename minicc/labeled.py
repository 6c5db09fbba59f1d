"""Human-labeled (prompt, response) pairs for measuring, and later training, the critic.

`data/critic/eval.jsonl` and `data/critic/train.jsonl` hold `LabeledResponse`s; how they were
built and where the labels come from is in `data/critic/README.md`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from minicc.errors import UserError
from minicc.jsonl import read_numbered_records

PromptLabel = Literal["safe", "unsafe", "unknown"]
ResponseKind = Literal["full_compliance", "full_refusal", "partial_refusal", "unknown"]


@dataclass(frozen=True)
class LabeledResponse:
    id: str
    """Stable identifier naming the source row, e.g. `gptfuzz-evaluate-0042`, `xstest-gpt4-195`."""
    prompt: str
    """The request as the source gives it (for GPTFuzz: the bare question, without the
    jailbreak template the responding model actually saw)."""
    response: str
    """The model's answer, stripped, and cut to the builder's length limit."""
    harmful: bool
    """The human label: True when the response gives harmful help. The critic should call it
    unsafe (score below `critique.safe_threshold`)."""
    source: str
    """Data set and, where known, the responding model: `gptfuzz`, `xstest-<model>`."""
    group: str
    """The prompt's id in its source (`gptfuzz:80`, `xstest:195`); rows sharing a group share a
    prompt, so grouped splits keep them on one side."""
    prompt_label: PromptLabel
    """Whether the request itself is safe to answer, where the source says; else `unknown`."""
    response_kind: ResponseKind
    """Compliance or refusal as annotated by the source; `unknown` where it has no such label."""


def load_labeled(path: Path) -> list[LabeledResponse]:
    """Read a labeled-response file, rejecting empty files, blank fields and duplicate ids."""
    numbered = read_numbered_records(path, LabeledResponse)
    if not numbered:
        raise UserError(f"{path}: no labeled responses; the file must hold at least one JSON line")
    seen: set[str] = set()
    for line, record in numbered:
        for name in ("id", "prompt", "response", "source", "group"):
            if not getattr(record, name).strip():
                raise UserError(f"{path}:{line}: field {name!r} is empty (id {record.id!r})")
        if record.id in seen:
            raise UserError(f"{path}:{line}: duplicate id {record.id!r}")
        seen.add(record.id)
    return [record for _, record in numbered]
