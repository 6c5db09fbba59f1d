"""The revise stage's library: targets, principle draws, the CAI dialogue, cleaning, chains."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, MakeModel, make_critique, models_params, write_params

from minicc.constitution import RevisionGuide, load_revision_guide
from minicc.errors import UserError
from minicc.generation import Request
from minicc.jsonl import write_records
from minicc.models import LoadedModel, load_model
from minicc.params import ReviseParams
from minicc.prompting import Turn, format_dialogue
from minicc.records import Critique, Revision, load_candidates
from minicc.resume import ResumeLog, RunCount
from minicc.revision import (
    clean_output,
    draw_principle,
    fault_of,
    opened,
    revise,
    revision_inputs,
    revision_targets,
)

PRINCIPLES = """\
version: "t"
principles:
  - id: kind
    principle: Be kind.
    question: Is it kind?
    critique_request: Say how the reply is unkind.
    revision_request: Rewrite the reply kindly.
  - id: safe
    principle: Be safe.
    question: Is it safe?
    critique_request: Say how the reply is unsafe.
    revision_request: Rewrite the reply safely.
"""

EXAMPLES = """\
provenance: written for this test
exchange: "Q: $request\\nA: $response"
examples:
  - principle: kind
    request: Insult me.
    response: You fool.
    critique: It insults.
    revision: I would rather not.
"""


@pytest.fixture
def guide(tmp_path: Path) -> RevisionGuide:
    principles = tmp_path / "principles.yaml"
    principles.write_text(PRINCIPLES, encoding="utf-8")
    examples = tmp_path / "examples.yaml"
    examples.write_text(EXAMPLES, encoding="utf-8")
    return load_revision_guide(principles, examples)


def critique(candidate_id: str, score: float | None, response: str = "Sure, step one.") -> Critique:
    return make_critique(
        candidate_id,
        score,
        prompt="How do I pick a lock?",
        category="adversarial",
        response=response,
    )


def revise_params(**overrides: Any) -> ReviseParams:
    values: dict[str, Any] = {
        "threshold": 3.0,
        "num_revisions": 2,
        "rounds": 2,
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "critique_max_new_tokens": 4,
        "revision_max_new_tokens": 5,
        "batch_size": 3,
    }
    return ReviseParams(**{**values, **overrides})


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Revision: I can't help with that.", "I can't help with that."),
        ("  revised reply:  Be careful.\n", "Be careful."),
        ("Critique: Revision: nested labels", "nested labels"),
        ("Here is a safer reply.\n\nCritique request: Say more.", "Here is a safer reply."),
        ("Fine.\nRevision request: again", "Fine."),
        ("Revision:   ", ""),
        (
            "A reply that mentions a revision: in passing.",
            "A reply that mentions a revision: in passing.",
        ),
    ],
)
def test_clean_output(raw: str, cleaned: str) -> None:
    assert clean_output(raw) == cleaned


def test_targets_are_the_scored_critiques_below_the_threshold_in_order() -> None:
    rows = [critique("a/0", 1.0), critique("a/1", 3.0), critique("b/0", None), critique("b/1", 2.9)]
    assert [c.candidate_id for c in revision_targets(rows, 3.0)] == ["a/0", "b/1"]


def test_principle_draw_depends_only_on_seed_and_id(guide: RevisionGuide) -> None:
    ids = [f"p{i}/0/rev1.0" for i in range(40)]
    drawn = [draw_principle(guide.principles, 1, i, "harmful").id for i in ids]
    assert drawn == [draw_principle(guide.principles, 1, i, "harmful").id for i in ids]
    assert set(drawn) == {"kind", "safe"}, "principles without a fault fit every fault"
    assert drawn != [draw_principle(guide.principles, 2, i, "harmful").id for i in ids]


def test_the_principle_fits_the_fault_the_critic_found(guide: RevisionGuide) -> None:
    kind, safe = guide.principles
    principles = [replace(kind, fault="unhelpful"), replace(safe, fault="harmful")]
    ids = [f"p{i}/0/rev1.0" for i in range(40)]
    assert {draw_principle(principles, 1, i, "harmful").id for i in ids} == {"safe"}
    assert {draw_principle(principles, 1, i, "unhelpful").id for i in ids} == {"kind"}
    # A fault no principle corrects falls back to every principle.
    only_harm = [replace(safe, fault="harmful"), replace(kind, fault="harmful")]
    assert {draw_principle(only_harm, 1, i, "unhelpful").id for i in ids} == {"kind", "safe"}


def test_an_unsafe_verdict_is_a_harmful_fault_any_other_an_unhelpful_one() -> None:
    assert fault_of(critique("a/0", 1.0)) == "harmful"
    assert fault_of(critique("a/1", 2.5)) == "harmful"
    assert fault_of(replace(critique("a/2", 2.0), safe=True)) == "unhelpful"


def test_base_model_dialogue_is_labelled_plain_text(make_tiny_model: MakeModel) -> None:
    loaded = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    turns = [
        Turn("user", "Q: hi\nA: yo"),
        Turn("assistant", "Rude.", "Critique"),
        Turn("user", "Fix"),
    ]
    assert format_dialogue(loaded, turns, "Revision") == (
        "Q: hi\nA: yo\n\nCritique: Rude.\n\nFix\n\nRevision:"
    )


def test_chat_dialogue_keeps_the_turns_in_order(critic_llama: LoadedModel) -> None:
    turns = [Turn("user", "first"), Turn("assistant", "second", "Critique"), Turn("user", "third")]
    text = format_dialogue(critic_llama, turns, "Revision")
    assert text.index("first") < text.index("second") < text.index("third")
    assert "Critique:" not in text


def fake_reviser(texts: dict[str, str], seen: list[Request]) -> Any:
    """A stand-in for complete_requests: answers each key's part from `texts` by its suffix."""

    def complete_requests(
        loaded: LoadedModel, requests: list[Request], *args: Any, **kwargs: Any
    ) -> tuple[dict[str, dict[str, Any]], RunCount]:
        seen.extend(requests)
        done = {}
        for r in requests:
            revision_id, part = r.key.split("#")
            text = texts.get(f"{revision_id}#{part}", texts[part])
            done[r.key] = {"key": r.key, "text": text, "num_tokens": 3, "finish_reason": "eos"}
        return done, RunCount(1, 0)

    return complete_requests


def test_chains_follow_rounds_and_an_empty_revision_ends_its_chain(
    guide: RevisionGuide, critic_llama: LoadedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    texts = {
        "critique": "Critique: It gives the steps.\nRevision request: x",
        "revision": "Revision: I won't help with that.",
        "a/0/rev1.0#revision": "Revision:  ",
    }
    seen: list[Request] = []
    monkeypatch.setattr("minicc.revision.complete_requests", fake_reviser(texts, seen))
    run = revise(
        critic_llama, guide, [critique("a/0", 1.0)], revise_params(), 5, ResumeLog(tmp_path, "r", 0)
    )
    assert [(r.candidate_id, r.round, r.original_id) for r in run.revisions] == [
        ("a/0/rev1.1", 1, "a/0"),
        ("a/0/rev2.1", 2, "a/0"),
    ]
    assert run.dropped_empty == 1
    assert {r.response for r in run.revisions} == {"I won't help with that."}
    assert {r.critique for r in run.revisions} == {"It gives the steps."}
    assert all(r.generator == critic_llama.model_id for r in run.revisions)
    by_key = {r.key: r.text for r in seen}
    principle = {p.id: p for p in guide.principles}[run.revisions[0].principle]
    first = by_key["a/0/rev1.1#revision"]
    assert "Sure, step one." in first and principle.critique_request in first  # type: ignore[operator]
    assert "It gives the steps." in first and principle.revision_request in first  # type: ignore[operator]
    assert "Insult me." in first, "the few-shot example comes first"
    assert "I won't help with that." in by_key["a/0/rev2.1#critique"], "round 2 revises round 1"


def test_an_opening_starts_the_revisions_of_its_fault_only(
    guide: RevisionGuide, critic_llama: LoadedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    texts = {"critique": "It helps.", "revision": "with that request."}
    seen: list[Request] = []
    monkeypatch.setattr("minicc.revision.complete_requests", fake_reviser(texts, seen))
    opened_guide = replace(guide, openings={"harmful": "I can't help"})
    harmful = critique("a/0", 1.0)  # judged unsafe
    unhelpful = replace(critique("b/0", 2.0), safe=True)
    run = revise(
        critic_llama,
        opened_guide,
        [harmful, unhelpful],
        revise_params(num_revisions=1, rounds=1),
        5,
        ResumeLog(tmp_path, "r", 0),
    )
    assert {r.original_id: r.response for r in run.revisions} == {
        "a/0": "I can't help with that request.",
        "b/0": "with that request.",
    }
    prompts = {r.key: r.text for r in seen}
    # The opening is written into the reviser's turn, after the revision request, not into the
    # critique; a chat turn starts on its own line, so no space goes before it.
    assert prompts["a/0/rev1.0#revision"].endswith("assistant\nI can't help")
    assert not prompts["a/0/rev1.0#critique"].endswith("I can't help")
    assert not prompts["b/0/rev1.0#revision"].endswith("I can't help")
    # The opening changes the revisions, so it names the resume log.
    params = revise_params()
    assert revision_inputs([harmful], params, 5, "m", guide) != revision_inputs(
        [harmful], params, 5, "m", opened_guide
    )


def test_a_base_models_opening_follows_its_label_after_a_space(
    guide: RevisionGuide,
    make_tiny_model: MakeModel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    loaded = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    seen: list[Request] = []
    texts = {"critique": "It helps.", "revision": "with that."}
    monkeypatch.setattr("minicc.revision.complete_requests", fake_reviser(texts, seen))
    opened_guide = replace(guide, openings={"harmful": "I can't help"})
    run = revise(
        loaded,
        opened_guide,
        [critique("a/0", 1.0)],
        revise_params(num_revisions=1, rounds=1),
        5,
        ResumeLog(tmp_path, "r", 0),
    )
    assert [r.response for r in run.revisions] == ["I can't help with that."]
    assert {r.key: r.text for r in seen}["a/0/rev1.0#revision"].endswith("Revision: I can't help")


@pytest.mark.parametrize(
    ("opening", "text", "joined"),
    [
        ("I can't help", "with that.", "I can't help with that."),
        ("I can't help", ", sorry.", "I can't help, sorry."),
        ("I can't help", "", "I can't help"),
        ("", "Sure.", "Sure."),
    ],
)
def test_opened_puts_back_the_space_before_a_word_only(
    opening: str, text: str, joined: str
) -> None:
    assert opened(opening, text) == joined


def test_revise_on_a_tiny_model_is_seeded_and_resumes(
    guide: RevisionGuide, critic_llama: LoadedModel, tmp_path: Path
) -> None:
    targets = [critique("a/0", 1.0), critique("b/0", 2.0, "Other reply.")]
    params = revise_params()
    log = ResumeLog(tmp_path, "revise", revision_inputs(targets, params, 3, "m", guide))
    first = revise(critic_llama, guide, targets, params, 3, log)
    assert len(first.revisions) + first.dropped_empty >= 4
    assert {r.round for r in first.revisions} <= {1, 2}
    assert {r.principle for r in first.revisions} <= {"kind", "safe"}
    again = revise(critic_llama, guide, targets, params, 3, log)
    assert again.revisions == first.revisions
    assert again.count.batches_run == 0 and again.count.batches_resumed > 0


def test_revisions_load_as_candidates(tmp_path: Path) -> None:
    path = tmp_path / "revisions.jsonl"
    revision = Revision(
        prompt_id="a",
        candidate_id="a/0/rev1.0",
        prompt="How?",
        category="adversarial",
        response="I can't help.",
        num_tokens=4,
        finish_reason="eos",
        generator="reviser",
        original_id="a/0",
        principle="kind",
        critique="It helped.",
        round=1,
    )
    write_records(path, [revision])
    (loaded,) = load_candidates(path)
    assert (loaded.candidate_id, loaded.response, loaded.generator) == (
        "a/0/rev1.0",
        "I can't help.",
        "reviser",
    )
    path.write_text(path.read_text().replace('"round": 1', '"round": "one"'), encoding="utf-8")
    with pytest.raises(UserError, match=r"revisions.jsonl:1: key 'round' must be int"):
        load_candidates(path)


def run_revise(tmp_path: Path, params: Path, principles: Path) -> subprocess.CompletedProcess[str]:
    critiques = tmp_path / "critiques.jsonl"
    write_records(critiques, [critique("a/0", 1.0)])
    command = [sys.executable, str(ROOT / "stages" / "revise.py"), "--critiques", str(critiques)]
    command += ["--principles", str(principles)]
    command += ["--examples", str(ROOT / "constitution" / "revision_examples.yaml")]
    command += ["--out", str(tmp_path / "out" / "revisions.jsonl"), "--params", str(params)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)


def test_stage_turned_off_writes_an_empty_file(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"revise": {"num_revisions": 0}})
    result = run_revise(tmp_path, params, ROOT / "constitution" / "principles.yaml")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "revisions.jsonl").read_text() == ""


def test_stage_refuses_a_principle_without_revision_text(tmp_path: Path) -> None:
    principles = tmp_path / "principles.yaml"
    principles.write_text(
        PRINCIPLES.replace("    revision_request: Rewrite the reply kindly.\n", "")
    )
    params = write_params(tmp_path / "params.yaml", {})
    result = run_revise(tmp_path, params, principles)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"revise: error: {principles}: principle 'kind' has no 'revision_request'; every "
        "principle needs one while revise is on (revise.num_revisions > 0)"
    )
    assert not (tmp_path / "out").exists()


def test_no_targets_no_revisions(
    guide: RevisionGuide, critic_llama: LoadedModel, tmp_path: Path
) -> None:
    run = revise(critic_llama, guide, [], revise_params(), 3, ResumeLog(tmp_path, "r", 0))
    assert (run.revisions, run.dropped_empty) == ([], 0)


def test_an_empty_revisions_file_gives_no_candidates(tmp_path: Path) -> None:
    path = tmp_path / "revisions.jsonl"
    path.write_text("", encoding="utf-8")
    assert load_candidates(path) == []
