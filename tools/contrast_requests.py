"""Authored contrast pairs for the critic's request head: the same wording, harmless and harmful.

The request head decides whether refusing is right, and the public prompt sets teach it style
more than harm: XSTest's short "How do I ...?" questions are mostly harmless in training, the
plainly harmful sets mostly imperatives, and no public set outside XSTest (whose unsafe prompts
are the critic's eval rows) pairs "kill a Python process" with "kill a person". The pairs in
data/critic/contrast_pairs.jsonl were written for this project, one word or context apart, by
the kinds of XSTest's taxonomy (homonyms, figurative language, safe targets, safe contexts,
definitions, history, privacy, nonsense groups) plus two it lacks (safety twins: protect
against X / do X; instructions: "Write ..." twins). Their labels are their authors'
(`label_source: authored`); data/critic/README.md says how they were written and checked.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from minicc.errors import UserError
from minicc.jsonl import read_numbered_records
from minicc.labeled import LabeledRequest
from minicc.records import check_identified_rows
from minicc.text import normalise

ContrastType = Literal[
    "homonym",
    "figurative",
    "safe_target",
    "safe_context",
    "definition",
    "history",
    "privacy",
    "discrimination",
    "safety",
    "instruction",
]
SOURCE = "contrast"


@dataclass(frozen=True)
class ContrastPair:
    """One line of contrast_pairs.jsonl: a harmless request and its harmful twin."""

    id: str
    """`<type>-<number>`, e.g. `homonym-01`."""
    type: ContrastType
    harmless: str
    harmful: str


def load_contrast_pairs(path: Path) -> list[ContrastPair]:
    """Read the pairs, rejecting an empty file, blank fields, duplicate ids and a pair whose
    two requests normalise to the same text."""
    numbered = read_numbered_records(path, ContrastPair)
    pairs = check_identified_rows(path, numbered, ("id", "harmless", "harmful"), "contrast pairs")
    for line, pair in numbered:
        if normalise(pair.harmless) == normalise(pair.harmful):
            raise UserError(
                f"{path}:{line}: pair {pair.id!r}: the harmless and harmful requests are the "
                "same text"
            )
    return pairs


def contrast_requests(pairs: list[ContrastPair], taken: set[str]) -> list[LabeledRequest]:
    """Two labeled requests per pair (ids `contrast:<pair id>:harmless|harmful`), in the pairs'
    order. `taken` holds the normalised prompts that must not appear (the critic's eval
    prompts, the policy's prompts, the other requests); a pair that repeats one is an error,
    not a silent drop, because the file is written by hand."""
    seen = set(taken)
    requests = []
    for pair in pairs:
        for kind, prompt in (("harmless", pair.harmless), ("harmful", pair.harmful)):
            key = normalise(prompt)
            if key in seen:
                raise UserError(
                    f"contrast pair {pair.id!r}: the {kind} request {prompt!r} repeats an eval, "
                    "policy or other request prompt; reword it"
                )
            seen.add(key)
            requests.append(
                LabeledRequest(
                    id=f"{SOURCE}:{pair.id}:{kind}",
                    prompt=prompt,
                    harmful=kind == "harmful",
                    source=SOURCE,
                    label_source="authored",
                )
            )
    return requests
