"""Human-labeled (prompt, response) pairs for measuring, and later training, the critic.

`data/critic/eval.jsonl` and `data/critic/train.jsonl` hold `LabeledResponse`s; how they were
built and where the labels come from is in `data/critic/README.md`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from minicc.jsonl import read_numbered_records
from minicc.records import check_identified_rows

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
    return check_identified_rows(
        path,
        read_numbered_records(path, LabeledResponse),
        ("id", "prompt", "response", "source", "group"),
        "labeled responses",
    )
