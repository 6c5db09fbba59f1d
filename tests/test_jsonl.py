"""JSONL records and atomic writes: exact round trips, no temporary files, clean write failures."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from minicc.errors import UserError
from minicc.jsonl import (
    atomic_write_files,
    atomic_write_text,
    read_records,
    write_json,
    write_records,
)
from minicc.records import Candidate, Critique, PreferencePair, Prompt, Selected

# Text that trips naive JSONL code: quotes, backslashes, escapes, non-ASCII, and characters that
# str.splitlines() treats as line breaks (U+2028, U+0085, form feed) but a JSONL line must keep.
AWKWARD = 'a "quote", a \\ backslash,\ttab,\nnewline,\r\nCRLF, é, ☔, 🙂, \u2028, \x85, \x0c end'

PROMPTS = [
    Prompt(id="p1", prompt=AWKWARD, category="adversarial", source="test:1"),
    Prompt(id="p2", prompt="plain", category="cooperative", source="test:2"),
]
CANDIDATES = [
    Candidate(
        prompt_id="p1",
        candidate_id="p1/0",
        prompt=AWKWARD,
        category="adversarial",
        response="I can't help with that.",
        num_tokens=7,
        finish_reason="eos",
        generator="smollm2-135m-instruct@abc123",
    ),
]
CRITIQUES = [
    Critique(
        prompt_id="p1",
        candidate_id="p1/0",
        prompt=AWKWARD,
        category="adversarial",
        response="I can't help with that.",
        generator="gen",
        critic="critic",
        constitution_version="v1+0123abcd",
        style="instruct",
        scored=True,
        unscored_reason=None,
        probabilities=[0.1 + 0.2, 1e-300, 0.0, 0.2, 0.4],
        digit_mass=0.987654321987654,
        score=4.123456789012345,
        safe=True,
        principle_scores={"harm": 4.5, "honesty": None},
        rationale=AWKWARD,
    ),
    Critique(
        prompt_id="p2",
        candidate_id="p2/0",
        prompt="plain",
        category="cooperative",
        response="",
        generator="gen",
        critic="critic",
        constitution_version="v1",
        style="base",
        scored=False,
        unscored_reason="digit mass 0.01 below 0.1",
        probabilities=None,
        digit_mass=0.01,
        score=None,
        safe=None,
        principle_scores=None,
        rationale=None,
    ),
]
SELECTED = [
    Selected(
        prompt_id="p1",
        candidate_id="p1/0",
        prompt=AWKWARD,
        category="adversarial",
        response="No.",
        score=4.5,
        safe=True,
        role="chosen",
        policy="margin",
    ),
]
PAIRS = [
    PreferencePair(
        prompt=AWKWARD,
        chosen="No.",
        rejected="Sure, here is how.",
        prompt_id="p1",
        category="adversarial",
        chosen_id="p1/0",
        rejected_id="p1/1",
        chosen_score=4.5,
        rejected_score=1.25,
    ),
]


@pytest.mark.parametrize(
    "records",
    [PROMPTS, CANDIDATES, CRITIQUES, SELECTED, PAIRS],
    ids=["prompt", "candidate", "critique", "selected", "pair"],
)
def test_write_then_read_round_trips_exactly(records: list[Any], tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_records(path, records)
    assert read_records(path, type(records[0])) == records


def test_one_line_per_record_with_readable_utf8(tmp_path: Path) -> None:
    path = tmp_path / "critiques.jsonl"
    write_records(path, CRITIQUES)
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == len(CRITIQUES)
    assert b"\r" not in raw
    assert "é, ☔, 🙂, \u2028, \x85".encode() in raw  # kept as UTF-8, not \u escapes


def test_no_records_write_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "none.jsonl"
    write_records(path, [])
    assert path.read_bytes() == b""
    assert read_records(path, Prompt) == []


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(UserError, match="file not found") as caught:
        read_records(path, Prompt)
    assert str(path) in str(caught.value)


def test_nested_field_types_are_checked_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "critiques.jsonl"
    write_records(path, CRITIQUES)
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): see AWKWARD
    broken = json.loads(lines[0]) | {"probabilities": ["high", 0.1]}
    path.write_text(lines[1] + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_records(path, Critique)
    message = str(caught.value)
    assert message.startswith(f"{path}:2:")
    assert "'probabilities' must be a list of float or null" in message


def test_atomic_write_replaces_content_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.jsonl"
    write_records(path, PROMPTS)
    assert read_records(path, Prompt) == PROMPTS
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


def test_atomic_write_keeps_newlines_as_given(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    atomic_write_text(path, "a,b\n1,2\n")
    assert path.read_bytes() == b"a,b\n1,2\n"


def assert_write_fails_cleanly(path: Path, text: str = "new\n") -> None:
    with pytest.raises(UserError) as caught:
        atomic_write_text(path, text)
    assert str(path) in str(caught.value)
    assert "cannot write" in str(caught.value)


def test_write_over_an_existing_directory_fails_cleanly(tmp_path: Path) -> None:
    """Fails for root too: a file cannot replace a directory."""
    path = tmp_path / "out.jsonl"
    path.mkdir()
    (path / "kept.txt").write_text("previous", encoding="utf-8")
    assert_write_fails_cleanly(path)
    assert (path / "kept.txt").read_text(encoding="utf-8") == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_below_a_file_fails_cleanly(tmp_path: Path) -> None:
    """Fails for root too: a regular file cannot be a folder."""
    parent = tmp_path / "metrics"
    parent.write_text("previous", encoding="utf-8")
    assert_write_fails_cleanly(parent / "pipeline.json")
    assert parent.read_text(encoding="utf-8") == "previous"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "out.jsonl").write_text("previous\n", encoding="utf-8")
    directory.chmod(0o555)
    try:
        probe = directory / "probe"
        try:
            probe.write_text("x", encoding="utf-8")
        except PermissionError:
            yield directory
        else:
            probe.unlink()
            pytest.skip("permissions do not stop writes here (running as root)")
    finally:
        directory.chmod(0o755)


def test_write_into_read_only_directory_fails_cleanly(read_only_dir: Path) -> None:
    path = read_only_dir / "out.jsonl"
    assert_write_fails_cleanly(path)
    assert path.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["out.jsonl"]


def test_unencodable_text_fails_cleanly_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("previous\n", encoding="utf-8")
    try:
        with pytest.raises(UserError):
            atomic_write_text(path, "broken emoji \ud83d\n")
    finally:
        assert path.read_text(encoding="utf-8") == "previous\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_json_is_indented_and_ends_with_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    value = {"all": {"count": 3, "mean_score": 3.5, "safe_rate": None}, "label": "é"}
    write_json(path, value)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert '\n  "all": {\n    "count": 3,' in text
    assert '"label": "é"' in text
    assert json.loads(text) == value
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


@pytest.mark.parametrize("blocked", ["first", "last"])
@pytest.mark.parametrize("how", ["directory", "below-a-file", "unencodable"])
def test_a_failure_on_any_of_several_outputs_leaves_all_of_them_as_they_were(
    tmp_path: Path, blocked: str, how: str
) -> None:
    paths = [tmp_path / "a.jsonl", tmp_path / "b.json", tmp_path / "c.csv"]
    for path in paths:
        path.write_text(f"old {path.name}\n", encoding="utf-8")
    texts = {path: f"new {path.name}\n" for path in paths}
    target = paths[0] if blocked == "first" else paths[-1]
    if how == "directory":
        target.unlink()
        target.mkdir()
    elif how == "below-a-file":
        del texts[target]
        target = target / "inner.csv"
        texts[target] = "new\n"
    else:
        texts[target] = "\udcff"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError, match=f"{target.name}: cannot write"):
        atomic_write_files(texts)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    for path in paths:
        if path.is_file():
            assert path.read_text(encoding="utf-8") == f"old {path.name}\n"


def test_several_outputs_are_all_written(tmp_path: Path) -> None:
    texts = {tmp_path / "x" / "a.txt": "one\n", tmp_path / "b.txt": "two\n"}
    atomic_write_files(texts)
    assert {p: p.read_text(encoding="utf-8") for p in texts} == texts
