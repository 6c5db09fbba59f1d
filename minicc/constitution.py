"""The constitution (principles) and the critic's prompt templates, loaded and validated."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from minicc.errors import UserError
from minicc.params import CriticStyle
from minicc.typecheck import build
from minicc.yaml_file import read_yaml


@dataclass(frozen=True)
class Principle:
    id: str
    principle: str
    """What the assistant should do, stated positively."""
    question: str
    """What the critic asks itself about a response under this principle."""


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
        try:
            principle = build(Principle, entry, f"{path}: principle {number}")
        except ValueError as error:
            raise UserError(str(error)) from None
        for name in ("id", "principle", "question"):
            if not getattr(principle, name).strip():
                raise UserError(f"{path}: principle {number}: {name!r} is empty")
        principles.append(principle)
    ids = [p.id for p in principles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"{path}: duplicate principle id {duplicates[0]!r}")
    return raw["version"], principles


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
