"""The shipped constitution and the loader's errors on broken files."""

from pathlib import Path

import pytest
from conftest import CONSTITUTION

from minicc.constitution import load_constitution, load_revision_guide, system_prompt_text
from minicc.errors import UserError
from minicc.params import CriticStyle

PRINCIPLES = CONSTITUTION / "principles.yaml"
TEMPLATES = {
    "instruct": CONSTITUTION / "critic_instruct.yaml",
    "base": CONSTITUTION / "critic_base.yaml",
}

# Each harm area the constitution must cover, and words that show a principle covers it.
TOPICS = {
    "violence": ("violence", "weapon"),
    "illegal or cyber": ("illegal", "crime", "hack", "cyber", "malware"),
    "privacy": ("privacy", "personal information"),
    "hate or harassment": ("hate", "harass"),
    "self-harm": ("self-harm", "self_harm", "suicide"),
    "fraud or deception": ("fraud", "scam", "deceiv", "decepti"),
    "honesty": ("honest",),
    "helpfulness": ("helpful", "useful"),
}

GOOD_PRINCIPLES = """\
version: "2.0"
principles:
  - id: kind
    principle: Be kind.
    question: Is the reply kind?
  - id: honest
    principle: Be honest.
    question: Is the reply honest?
"""

GOOD_TEMPLATE = """\
judge: |-
  Principles: $principles
  Request: $prompt
  Reply: $response
answer_prefix: "Rating: "
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_principles_cover_the_harm_areas() -> None:
    rules = load_constitution(PRINCIPLES, TEMPLATES["instruct"], "instruct")
    ids = [p.id for p in rules.principles]
    assert 6 <= len(ids) <= 10
    assert len(set(ids)) == len(ids)
    texts = [f"{p.id} {p.principle} {p.question}".lower() for p in rules.principles]
    for topic, words in TOPICS.items():
        assert any(word in text for text in texts for word in words), topic
    for principle in rules.principles:
        assert principle.question.strip().endswith("?")
    # The revise stage can draw a fitting principle for either verdict of the critic.
    assert {p.fault for p in rules.principles} == {"harmful", "unhelpful"}


@pytest.mark.parametrize("style", ["instruct", "base"])
def test_shipped_templates_load(style: CriticStyle) -> None:
    rules = load_constitution(PRINCIPLES, TEMPLATES[style], style)
    assert rules.template.style == style
    assert rules.version.startswith("1.0+")
    assert set(rules.template.judge.get_identifiers()) == {"principles", "prompt", "response"}
    assert rules.template.answer_prefix.rstrip().endswith("Rating:")
    # The candidate-specific part comes last, so the shared prefix can be computed once.
    judge = rules.template.judge.template
    assert judge.rindex("$principles") < judge.rindex("$prompt") < judge.rindex("$response")


def test_good_files_load(tmp_path: Path) -> None:
    principles = write(tmp_path, "p.yaml", GOOD_PRINCIPLES)
    template = write(tmp_path, "t.yaml", GOOD_TEMPLATE)
    rules = load_constitution(principles, template, "base")
    assert [p.id for p in rules.principles] == ["kind", "honest"]
    assert rules.principles[1].question == "Is the reply honest?"
    assert rules.version.startswith("2.0+")
    assert rules.template.answer_prefix == "Rating: "


BAD_PRINCIPLES = {
    "empty list": ('version: "1"\nprinciples: []\n', "non-empty list"),
    "no principles key": ('version: "1"\n', "non-empty list"),
    "no version": (
        "principles:\n  - id: a\n    principle: Be good.\n    question: Good?\n",
        "version",
    ),
    "missing question": (
        'version: "1"\nprinciples:\n  - id: a\n    principle: Be good.\n',
        "question",
    ),
    "blank question": (
        'version: "1"\nprinciples:\n  - {id: a, principle: Be good., question: "  "}\n',
        "question",
    ),
    "unknown key": (
        'version: "1"\nprinciples:\n  - {id: a, principle: P., question: Is it Q, weight: 2}\n',
        "weight",
    ),
    "duplicate ids": (
        'version: "1"\nprinciples:\n'
        "  - {id: same, principle: P., question: Is it Q}\n"
        "  - {id: same, principle: R., question: Is it S}\n",
        "duplicate principle id 'same'",
    ),
    "not a mapping": ('version: "1"\nprinciples:\n  - just a string\n', "mapping"),
    "invalid YAML": ('version: "1"\nprinciples: [\n  - {id: a\n', "invalid YAML"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_PRINCIPLES.values(), ids=BAD_PRINCIPLES)
def test_bad_principles_file_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    principles = write(tmp_path, "principles.yaml", text)
    template = write(tmp_path, "t.yaml", GOOD_TEMPLATE)
    with pytest.raises(UserError) as error:
        load_constitution(principles, template, "base")
    message = str(error.value)
    assert str(principles) in message
    assert expected in message


BAD_TEMPLATES = {
    "missing placeholder": (
        'judge: "Principles: $principles Request: $prompt"\nanswer_prefix: "Rating: "\n',
        "$response",
    ),
    "unknown placeholder": (
        'judge: "$principles $prompt $response $extra"\nanswer_prefix: "Rating: "\n',
        "extra",
    ),
    "missing answer_prefix": ('judge: "$principles $prompt $response"\n', "answer_prefix"),
    "invalid YAML": ('judge: "$principles $prompt $response\nanswer_prefix: [\n', "invalid YAML"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_TEMPLATES.values(), ids=BAD_TEMPLATES)
def test_bad_template_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    principles = write(tmp_path, "p.yaml", GOOD_PRINCIPLES)
    template = write(tmp_path, "critic_base.yaml", text)
    with pytest.raises(UserError) as error:
        load_constitution(principles, template, "base")
    message = str(error.value)
    assert str(template) in message
    assert expected in message


@pytest.mark.parametrize("missing", ["principles", "template"])
def test_missing_file_is_refused(tmp_path: Path, missing: str) -> None:
    paths = {
        "principles": write(tmp_path, "p.yaml", GOOD_PRINCIPLES),
        "template": write(tmp_path, "t.yaml", GOOD_TEMPLATE),
    }
    paths[missing] = tmp_path / "nowhere.yaml"
    with pytest.raises(UserError, match="file not found") as error:
        load_constitution(paths["principles"], paths["template"], "base")
    assert str(tmp_path / "nowhere.yaml") in str(error.value)


def test_version_pins_the_file_contents(tmp_path: Path) -> None:
    principles = write(tmp_path, "p.yaml", GOOD_PRINCIPLES)
    template = write(tmp_path, "t.yaml", GOOD_TEMPLATE)
    original = load_constitution(principles, template, "base").version
    assert load_constitution(principles, template, "base").version == original

    write(tmp_path, "p.yaml", GOOD_PRINCIPLES + "# a comment changes the bytes, not the meaning\n")
    commented = load_constitution(principles, template, "base").version
    assert commented != original
    assert commented.startswith("2.0+")

    write(tmp_path, "p.yaml", GOOD_PRINCIPLES)
    write(tmp_path, "t.yaml", GOOD_TEMPLATE.replace("Rating: ", "Score: "))
    assert load_constitution(principles, template, "base").version not in {original, commented}


# --- the reviser's requests and few-shot examples (revise stage) ---

EXAMPLES = CONSTITUTION / "revision_examples.yaml"

GOOD_REVISABLE = """\
version: "2.0"
principles:
  - id: kind
    principle: Be kind.
    question: Is the reply kind?
    critique_request: Say how the reply is unkind.
    revision_request: Rewrite the reply kindly.
"""

GOOD_EXAMPLES = """\
provenance: written for this test
exchange: "Q: $request A: $response"
examples:
  - principle: kind
    request: Insult me.
    response: You fool.
    critique: It insults.
    revision: I'd rather not insult you.
"""


def test_shipped_revision_guide_loads_with_every_principle_revisable() -> None:
    guide = load_revision_guide(PRINCIPLES, EXAMPLES)
    assert len(guide.principles) == len(
        load_constitution(PRINCIPLES, TEMPLATES["instruct"], "instruct").principles
    )
    assert all(p.critique_request and p.revision_request for p in guide.principles)
    assert {e.principle for e in guide.examples} <= {p.id for p in guide.principles}
    assert guide.exchange.substitute(request="R?", response="A.").count("R?") == 1


def test_openings_load_by_fault(tmp_path: Path) -> None:
    principles = write(tmp_path, "p.yaml", GOOD_REVISABLE)
    plain = load_revision_guide(principles, write(tmp_path, "e.yaml", GOOD_EXAMPLES))
    assert plain.openings == {}
    with_opening = GOOD_EXAMPLES + "openings:\n  harmful: I won't help with\n"
    guide = load_revision_guide(principles, write(tmp_path, "e2.yaml", with_opening))
    assert guide.openings == {"harmful": "I won't help with"}


def test_the_shipped_opening_loads_once_its_two_lines_are_uncommented(tmp_path: Path) -> None:
    # The README tells a user to take the measured opening by uncommenting it.
    text = EXAMPLES.read_text(encoding="utf-8")
    uncommented = text.replace("# openings:", "openings:").replace("#   harmful:", "  harmful:")
    guide = load_revision_guide(PRINCIPLES, write(tmp_path, "e.yaml", uncommented))
    assert load_revision_guide(PRINCIPLES, EXAMPLES).openings == {}
    assert guide.openings == {"harmful": "I can't help with"}


def test_shipped_examples_state_their_provenance() -> None:
    text = EXAMPLES.read_text(encoding="utf-8")
    assert "provenance:" in text and "Bai et al. 2022" in text


def test_principles_without_revision_texts_still_serve_the_critic(tmp_path: Path) -> None:
    principles = write(tmp_path, "p.yaml", GOOD_PRINCIPLES)
    template = write(tmp_path, "t.yaml", GOOD_TEMPLATE)
    loaded = load_constitution(principles, template, "instruct")
    assert [p.critique_request for p in loaded.principles] == [None, None]


@pytest.mark.parametrize(
    ("principles", "examples", "expected"),
    [
        pytest.param(
            GOOD_PRINCIPLES,
            GOOD_EXAMPLES,
            "p.yaml: principle 'kind' has no 'critique_request'",
            id="principle-without-revision-text",
        ),
        pytest.param(
            GOOD_REVISABLE.replace("    revision_request: Rewrite the reply kindly.\n", ""),
            GOOD_EXAMPLES,
            "p.yaml: principle 'kind' has no 'revision_request'",
            id="principle-without-revision-request",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES.replace(" A: $response", ""),
            "e.yaml: key 'exchange': the template must use exactly $request and $response",
            id="exchange-without-response",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES.replace("Q: $request ", ""),
            "e.yaml: key 'exchange': the template must use exactly $request and $response",
            id="exchange-without-request",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES.replace("principle: kind", "principle: brave"),
            "e.yaml: example 1: key 'principle': unknown principle 'brave'",
            id="example-of-unknown-principle",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES.replace("revision: I'd rather not insult you.", "revision: ' '"),
            "e.yaml: example 1: key 'revision' is empty",
            id="empty-example-revision",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES.replace("provenance: written for this test\n", ""),
            "e.yaml: expected the keys examples, exchange, provenance and optionally openings",
            id="no-provenance",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES + "openings:\n  rude: I won't\n",
            "e.yaml: openings: unknown fault 'rude'; allowed: harmful, unhelpful",
            id="opening-of-unknown-fault",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES + "openings:\n  harmful: 'I won''t '\n",
            "e.yaml: openings: 'harmful' must be words without surrounding spaces",
            id="opening-with-a-trailing-space",
        ),
        pytest.param(
            GOOD_REVISABLE,
            GOOD_EXAMPLES + "openings: I won't\n",
            "e.yaml: key 'openings' must be a mapping of a fault to its words",
            id="openings-not-a-mapping",
        ),
        pytest.param(
            GOOD_REVISABLE.replace("Rewrite the reply kindly.", "' '"),
            GOOD_EXAMPLES,
            "p.yaml: principle 1: 'revision_request' is empty",
            id="blank-revision-request",
        ),
    ],
)
def test_bad_revision_files_are_refused(
    tmp_path: Path, principles: str, examples: str, expected: str
) -> None:
    with pytest.raises(UserError, match=expected.replace("$", r"\$")) as error:
        load_revision_guide(
            write(tmp_path, "p.yaml", principles), write(tmp_path, "e.yaml", examples)
        )
    assert "\n" not in str(error.value)


def test_system_prompt_states_every_principle() -> None:
    text = system_prompt_text(PRINCIPLES)
    rules = load_constitution(PRINCIPLES, TEMPLATES["instruct"], "instruct").principles
    assert all(p.principle in text for p in rules)
