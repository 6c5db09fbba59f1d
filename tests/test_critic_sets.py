"""The committed critic sets: counts, labeling rule, train/eval separation and a reproducible build.

Only `data/` is read, except by the rebuild tests, which need the public CSVs in
`../shared/data` and are skipped where they are absent.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from minicc.errors import UserError
from minicc.labeled import LabeledResponse, load_labeled
from minicc.text import normalise

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "critic"
SHARED = ROOT.parent / "shared" / "data"
FILES = ("eval.jsonl", "train.jsonl")
MAX_RESPONSE_CHARS = 4000

# (source, harmful) -> rows; the same table is in data/critic/README.md.
EXPECTED = {
    "eval.jsonl": {
        ("gptfuzz", True): 150,
        ("gptfuzz", False): 150,
        ("xstest-gpt4", True): 1,
        ("xstest-gpt4", False): 34,
        ("xstest-llama2new", False): 32,
        ("xstest-llama2orig", False): 31,
        ("xstest-mistralguard", True): 7,
        ("xstest-mistralguard", False): 31,
        ("xstest-mistralinstruct", True): 128,
        ("xstest-mistralinstruct", False): 36,
    },
    "train.jsonl": {
        ("gptfuzz", True): 750,
        ("gptfuzz", False): 750,
        ("xstest-gpt4", False): 102,
        ("xstest-llama2new", False): 100,
        ("xstest-llama2orig", False): 98,
        ("xstest-mistralguard", False): 101,
        ("xstest-mistralinstruct", False): 99,
    },
}


def load(name: str) -> list[LabeledResponse]:
    return load_labeled(DATA / name)


def key(record: LabeledResponse) -> str:
    return normalise(record.prompt + " " + record.response)


@pytest.mark.parametrize("name", FILES)
def test_counts_per_source_and_label_are_as_documented(name: str) -> None:
    counts = Counter((record.source, record.harmful) for record in load(name))
    assert dict(counts) == EXPECTED[name]


def test_eval_is_large_enough_and_each_source_has_both_labels() -> None:
    records = load("eval.jsonl")
    assert len(records) >= 500
    labels_by_source: dict[str, set[bool]] = {}
    for record in records:
        # XSTest counts as one source here: the Llama-2 models never fully complied with an
        # unsafe prompt, so their rows are all harmless.
        labels_by_source.setdefault(record.source.split("-")[0], set()).add(record.harmful)
    assert labels_by_source == {"gptfuzz": {True, False}, "xstest": {True, False}}


def test_xstest_training_prompts_are_in_neither_eval_nor_the_policy_prompt_files() -> None:
    train = {r.group for r in load("train.jsonl") if r.source.startswith("xstest-")}
    evaluation = {r.group for r in load("eval.jsonl") if r.source.startswith("xstest-")}
    policy = {
        "xstest:" + json.loads(line)["source"].split(":", 1)[1]
        for name in ("prompts.jsonl", "eval_prompts.jsonl")
        for line in (ROOT / "data" / name).read_text(encoding="utf-8").splitlines()
        if json.loads(line)["source"].startswith("xstest:")
    }
    assert len(train) > 100
    assert train & evaluation == set()
    assert train & policy == set()


def test_xstest_training_rows_teach_over_refusal() -> None:
    rows = [r for r in load("train.jsonl") if r.source.startswith("xstest-")]
    kinds = Counter((r.prompt_label, r.response_kind) for r in rows)
    assert kinds["safe", "full_compliance"] > 0
    assert kinds["safe", "full_refusal"] + kinds["safe", "partial_refusal"] > 50
    assert not any(r.harmful for r in rows)


def test_every_gptfuzz_eval_question_is_represented_and_none_is_in_train() -> None:
    evaluation = {r.group for r in load("eval.jsonl") if r.source == "gptfuzz"}
    train = {r.group for r in load("train.jsonl") if r.source == "gptfuzz"}
    assert evaluation == {f"gptfuzz:{q}" for q in range(80, 100)}
    assert len(train) == 80
    assert evaluation & train == set()


def test_ids_are_unique_across_both_files() -> None:
    ids = [record.id for name in FILES for record in load(name)]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


@pytest.mark.parametrize("name", FILES)
def test_no_duplicate_example_within_a_file(name: str) -> None:
    keys = [key(record) for record in load(name)]
    assert [k for k, n in Counter(keys).items() if n > 1] == []


def test_train_and_eval_share_no_example_after_normalising() -> None:
    train = {key(record) for record in load("train.jsonl")}
    evaluation = {key(record) for record in load("eval.jsonl")}
    assert train & evaluation == set()


def test_xstest_labels_follow_the_rule() -> None:
    for record in load("eval.jsonl"):
        if record.source.startswith("xstest-"):
            unsafe_compliance = (
                record.prompt_label == "unsafe" and record.response_kind == "full_compliance"
            )
            assert record.harmful == unsafe_compliance, record.id


@pytest.mark.parametrize("name", FILES)
def test_responses_are_stripped_and_within_the_length_limit(name: str) -> None:
    for record in load(name):
        assert record.response == record.response.strip() != "", record.id
        assert len(record.response) <= MAX_RESPONSE_CHARS, record.id


def test_loader_rejects_a_duplicate_id(tmp_path: Path) -> None:
    line = json.dumps(
        {
            "id": "x-1",
            "prompt": "p",
            "response": "r",
            "harmful": False,
            "source": "s",
            "group": "s:1",
            "prompt_label": "unknown",
            "response_kind": "unknown",
        }
    )
    path = tmp_path / "labeled.jsonl"
    path.write_text(f"{line}\n{line}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"labeled.jsonl:2: duplicate id 'x-1'"):
        load_labeled(path)


def needs_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the public CSVs are needed to rebuild the critic sets")


def test_builder_reproduces_the_committed_files(tmp_path: Path) -> None:
    needs_shared()
    # The script imports minicc; make that work whether or not the package is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "tools/build_critic_sets.py", "--shared", str(SHARED)]
    result = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_gptfuzz_license_is_a_verbatim_copy() -> None:
    needs_shared()
    copy = ROOT / "data" / "licenses" / "gptfuzz-LICENSE"
    assert copy.read_bytes() == (SHARED / "gptfuzz" / "LICENSE").read_bytes()
