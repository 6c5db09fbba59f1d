"""The constitution (principles), the critic's prompt templates and the reviser's few-shot
examples, loaded and validated."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal, get_args

from minicc.errors import UserError
from minicc.params import CriticStyle
from minicc.typecheck import build
from minicc.yaml_file import read_yaml

Fault = Literal["harmful", "unhelpful"]


@dataclass(frozen=True)
class Principle:
    id: str
    principle: str
    """What the assistant should do, stated positively."""
    question: str
    """What the critic asks itself about a response under this principle."""
    critique_request: str | None
    """What the reviser is asked to criticise under this principle (revise stage); optional in
    the file, required while revise is on."""
    revision_request: str | None
    """What the reviser is asked to rewrite after its critique (revise stage)."""
    fault: Fault | None
    """The fault the principle corrects: `harmful` help or an `unhelpful` reply (a needless
    refusal, a useless or false answer). The revise stage draws a principle that fits the critic's
    verdict on the reply; a principle without one fits both."""


@dataclass(frozen=True)
class CriticTemplate:
    style: CriticStyle
    judge: Template
    """Uses $principles, $prompt and $response; for `instruct` it is the user turn."""
    answer_prefix: str
    """Text the critic's answer starts with; the next token must be the digit."""


@dataclass(frozen=True)
class Constitution:
    version: str
    """Declared version plus a hash of the principles and template, recorded in every critique."""
    principles: list[Principle]
    template: CriticTemplate


def _load_principles(path: Path) -> tuple[str, list[Principle]]:
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("version"), str):
        raise UserError(f"{path}: expected a mapping with a string 'version' and 'principles'")
    entries = raw.get("principles")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: 'principles' must be a non-empty list")
    principles = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: principle {number} must be a mapping")
        # The revision texts may be left out of a constitution that is never used to revise.
        optional = {"critique_request": None, "revision_request": None, "fault": None}
        try:
            principle = build(Principle, {**optional, **entry}, f"{path}: principle {number}")
        except ValueError as error:
            raise UserError(str(error)) from None
        for name in ("id", "principle", "question", *optional):
            value = getattr(principle, name)
            if value is not None and not value.strip():
                raise UserError(f"{path}: principle {number}: {name!r} is empty")
        principles.append(principle)
    ids = [p.id for p in principles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"{path}: duplicate principle id {duplicates[0]!r}")
    return raw["version"], principles


def system_prompt_text(principles_path: Path) -> str:
    """The principles as a system prompt, for constitution-guided sampling (generate)."""
    _, principles = _load_principles(principles_path)
    rules = "\n".join(f"- {p.principle}" for p in principles)
    return f"You are a helpful, harmless assistant. Follow these principles always:\n{rules}"


def _load_template(path: Path, style: CriticStyle) -> CriticTemplate:
    raw = read_yaml(path)
    if not isinstance(raw, dict) or set(raw) != {"judge", "answer_prefix"}:
        raise UserError(f"{path}: expected exactly the keys 'judge' and 'answer_prefix'")
    judge = Template(str(raw["judge"]))
    placeholders = set(judge.get_identifiers())
    if placeholders != {"principles", "prompt", "response"}:
        raise UserError(
            f"{path}: the judge template must use exactly $principles, $prompt and $response; "
            f"found {sorted(placeholders)}"
        )
    return CriticTemplate(style=style, judge=judge, answer_prefix=str(raw["answer_prefix"]))


def load_constitution(
    principles_path: Path, template_path: Path, style: CriticStyle
) -> Constitution:
    """Load principles and the template for `style`; the version pins both files' contents."""
    declared, principles = _load_principles(principles_path)
    template = _load_template(template_path, style)
    digest = hashlib.sha256(
        principles_path.read_bytes() + b"\0" + template_path.read_bytes()
    ).hexdigest()[:8]
    return Constitution(version=f"{declared}+{digest}", principles=principles, template=template)


@dataclass(frozen=True)
class RevisionExample:
    """One worked critique and revision, shown to the reviser before its own task."""

    principle: str
    """Id of the principle whose critique and revision requests the example answers."""
    request: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class RevisionGuide:
    """What the reviser is shown: the principles' requests, worked examples, the exchange frame."""

    principles: list[Principle]
    """Every principle, each with its critique and revision requests."""
    exchange: Template
    """Renders a request and a reply ($request, $response) for the reviser to criticise."""
    examples: list[RevisionExample]
    openings: dict[Fault, str]
    """The words the reviser's revision starts with, by the fault the critic found in the reply
    (`openings` in the examples file; a fault not named gets none): written into the reviser's
    turn before it writes the rest."""


def _template(path: Path, raw: dict[str, object], key: str, needed: set[str]) -> Template:
    if not isinstance(raw.get(key), str):
        raise UserError(f"{path}: key {key!r} must be a string template")
    template = Template(str(raw[key]))
    found = set(template.get_identifiers())
    if found != needed:
        raise UserError(
            f"{path}: key {key!r}: the template must use exactly "
            f"{' and '.join('$' + n for n in sorted(needed))}; found {sorted(found)}"
        )
    return template


def load_revision_guide(principles_path: Path, examples_path: Path) -> RevisionGuide:
    """The principles (each must have revision texts) and the few-shot examples.

    Called only while revise is on: a principle without its critique or revision request is
    an error then, since any principle may be drawn for any candidate.
    """
    _, principles = _load_principles(principles_path)
    for principle in principles:
        for name in ("critique_request", "revision_request"):
            if getattr(principle, name) is None:
                raise UserError(
                    f"{principles_path}: principle {principle.id!r} has no {name!r}; every "
                    "principle needs one while revise is on (revise.num_revisions > 0)"
                )
    raw = read_yaml(examples_path)
    required = {"provenance", "exchange", "examples"}
    if not isinstance(raw, dict) or not required <= set(raw) <= required | {"openings"}:
        raise UserError(
            f"{examples_path}: expected the keys {', '.join(sorted(required))} and optionally "
            "openings"
        )
    exchange = _template(examples_path, raw, "exchange", {"request", "response"})
    entries = raw["examples"]
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{examples_path}: 'examples' must be a non-empty list")
    ids = {p.id for p in principles}
    examples = []
    for number, entry in enumerate(entries, start=1):
        where = f"{examples_path}: example {number}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be a mapping")
        try:
            example = build(RevisionExample, entry, where)
        except ValueError as error:
            raise UserError(str(error)) from None
        if example.principle not in ids:
            raise UserError(f"{where}: key 'principle': unknown principle {example.principle!r}")
        for name in ("request", "response", "critique", "revision"):
            if not getattr(example, name).strip():
                raise UserError(f"{where}: key {name!r} is empty")
        examples.append(example)
    openings = _openings(examples_path, raw.get("openings", {}))
    return RevisionGuide(
        principles=principles, exchange=exchange, examples=examples, openings=openings
    )


def _openings(path: Path, raw: object) -> dict[Fault, str]:
    faults = get_args(Fault)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: key 'openings' must be a mapping of a fault to its words")
    for fault, words in raw.items():
        if fault not in faults:
            raise UserError(
                f"{path}: openings: unknown fault {fault!r}; allowed: {', '.join(faults)}"
            )
        if not isinstance(words, str) or not words.strip() or words != words.strip():
            raise UserError(
                f"{path}: openings: {fault!r} must be words without surrounding spaces, "
                f"got {words!r}"
            )
    return dict(raw)
