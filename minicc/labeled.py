"""Labeled (prompt, response) pairs and labeled requests, for training and measuring the critic.

`data/critic/eval.jsonl` and `data/critic/train.jsonl` hold `LabeledResponse`s and
`data/critic/requests.jsonl` holds `LabeledRequest`s; how they were built and where the labels
come from is in `data/critic/README.md`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from minicc.errors import UserError
from minicc.jsonl import read_numbered_records
from minicc.records import check_identified_rows

PromptLabel = Literal["safe", "unsafe", "unknown"]
ResponseKind = Literal["full_compliance", "full_refusal", "partial_refusal", "unknown"]
LabelSource = Literal["human", "model", "constructed", "authored"]
"""Who labeled the row: people (GPTFuzz, XSTest), a judge model (JailbreakBench), the
construction rule of tools/constructed_negatives.py, or the author of a contrast pair, whose
request label a compliant reply inherits (tools/contrast_replies.py)."""
RequestLabelSource = Literal["human", "authored"]
"""Who labeled a request: its public prompt set, or the author of the project's contrast pairs
(tools/contrast_requests.py)."""
Construction = Literal[
    "off_topic",
    "loop",
    "noise",
    "truncated",
    "empty",
    "refusal",
    "commentary",
    "offer",
    "restatement",
]
"""How a constructed reply was made from a real one (data/critic/README.md)."""
REFUSALS = ("full_refusal", "partial_refusal")


@dataclass(frozen=True)
class LabeledResponse:
    id: str
    """Stable identifier naming the source row, e.g. `gptfuzz-evaluate-0042`, `xstest-gpt4-195`,
    `jbb-pair-vicuna-13b-v1.5-007`, `constructed-loop-xstest-gpt4-195`."""
    prompt: str
    """The request as the source gives it (for GPTFuzz and JailbreakBench: the bare request,
    without the jailbreak template the responding model actually saw)."""
    response: str
    """The model's answer, stripped, and cut to the builder's length limit; empty only for a
    constructed empty reply."""
    harmful: bool
    """True when the response gives harmful help. The critic should call it unsafe (`safe`
    false: the probe's P(harmful help) at least 0.5, the judge's score below
    `critique.safe_threshold`)."""
    source: str
    """Data set and, where known, the responding model or the construction: `gptfuzz`,
    `xstest-<model>`, `jbb-<model>`, `constructed-<construction>`."""
    group: str
    """The prompt's id in its source (`gptfuzz:80`, `xstest:195`, `jbb:7`); rows sharing a group
    answer one request (a few JailbreakBench artifacts word their goal slightly differently),
    so grouped splits keep them on one side."""
    prompt_label: PromptLabel
    """Whether the request itself is safe to answer, where the source says; else `unknown`."""
    response_kind: ResponseKind
    """Compliance or refusal as annotated by the source; `unknown` where it has no such label."""
    label_source: LabelSource
    construction: Construction | None
    """For a constructed row, how it was made; null for a real model's reply."""
    pair_of: str | None
    """For a constructed row, the id of the real reply it was made from (for a refusal of a
    harmful request: of a harmful reply to the same request); null otherwise."""

    @property
    def refusal(self) -> bool | None:
        """Whether the reply refuses: known from the source's annotation, from the construction,
        or because harmful help is never a refusal; None where nothing says."""
        if self.response_kind in REFUSALS or self.construction == "refusal":
            return True
        if self.response_kind == "full_compliance" or self.harmful or self.construction:
            return False
        return None

    @property
    def on_task(self) -> bool | None:
        """Whether a reply that does not refuse addresses its request: True for a real answer
        (annotated compliance, or harmful help), False for a constructed useless reply, None for
        refusals and for replies nothing says about."""
        if self.construction is not None:
            return None if self.construction == "refusal" else False
        if self.response_kind == "full_compliance" or self.harmful:
            return True
        return None


@dataclass(frozen=True)
class LabeledRequest:
    """A request labeled harmful or harmless by the prompt set it comes from, or by the author
    of a contrast pair (no reply)."""

    id: str
    """`<source>:<row id>`, e.g. `advbench:17`, `xstest:104`, `jailbreakbench-benign:42`,
    `contrast:homonym-01:harmful`."""
    prompt: str
    harmful: bool
    source: str
    """The prompt set: advbench, jailbreakbench-harmful, jailbreakbench-benign,
    simplesafetytests, gptfuzz, xstest, or contrast (data/critic/contrast_pairs.jsonl)."""
    label_source: RequestLabelSource


def load_labeled(path: Path) -> list[LabeledResponse]:
    """Read a labeled-response file, rejecting empty files, blank fields, duplicate ids and
    constructed rows that do not differ from the reply they were made from."""
    numbered = read_numbered_records(path, LabeledResponse)
    rows = check_identified_rows(
        path, numbered, ("id", "prompt", "source", "group"), "labeled responses"
    )
    by_id = {row.id: row for row in rows}
    for line, row in numbered:
        constructed = row.label_source == "constructed"
        if (row.construction is None) == constructed or (row.pair_of is None) == constructed:
            raise UserError(
                f"{path}:{line}: row {row.id!r}: `construction` and `pair_of` are set exactly "
                "on the rows whose label_source is 'constructed'"
            )
        if (not row.response.strip()) != (row.construction == "empty"):
            raise UserError(
                f"{path}:{line}: field 'response' is empty (id {row.id!r}); only a constructed "
                "'empty' reply is, and it must be"
            )
        if row.pair_of is not None:
            original = by_id.get(row.pair_of)
            if original is None:
                raise UserError(
                    f"{path}:{line}: row {row.id!r} names pair_of {row.pair_of!r}, not in the file"
                )
            if original.group != row.group:
                raise UserError(
                    f"{path}:{line}: constructed row {row.id!r} is in group {row.group!r}, its "
                    f"answer {row.pair_of!r} in {original.group!r}"
                )
            if original.response.strip() == row.response.strip():
                raise UserError(
                    f"{path}:{line}: constructed row {row.id!r} equals its answer "
                    f"{row.pair_of!r}; a constructed negative must differ from it"
                )
    return rows


def load_requests(path: Path) -> list[LabeledRequest]:
    """Read a labeled-request file, rejecting empty files, blank fields and duplicate ids."""
    return check_identified_rows(
        path,
        read_numbered_records(path, LabeledRequest),
        ("id", "prompt", "source"),
        "labeled requests",
    )
