"""The committed prompt pools: size, schema, train/eval separation and a reproducible build.

Only `data/` is read, except by the rebuild test, which needs the public CSVs in
`../shared/data` and is skipped where they are absent.
"""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from minicc.records import CATEGORIES, Prompt, load_prompts
from minicc.text import normalise

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "prompt_pool"
SHARED = ROOT.parent / "shared" / "data"
FILES = ("train.jsonl", "eval.jsonl")
HARMFUL_SOURCES = {"advbench", "jailbreakbench-harmful", "simplesafetytests", "gptfuzz"}
HARMLESS_SOURCES = {"xstest", "jailbreakbench-benign"}


def load(name: str) -> list[Prompt]:
    return load_prompts(DATA / name)


def source_name(prompt: Prompt) -> str:
    return prompt.source.split(":", 1)[0]


def test_eval_set_is_large_enough_on_both_sides() -> None:
    prompts = load("eval.jsonl")
    harmful = [p for p in prompts if p.category == "adversarial"]
    harmless = [p for p in prompts if p.category != "adversarial"]
    xstest_safe = [p for p in harmless if source_name(p) == "xstest"]
    assert len(prompts) >= 300
    assert (len(harmful) >= 150, len(harmless) >= 150, len(xstest_safe) >= 100) == (True,) * 3
    assert {source_name(p) for p in harmful} == HARMFUL_SOURCES
    assert {source_name(p) for p in harmless} == HARMLESS_SOURCES


def test_training_pool_draws_on_every_source_and_covers_each_category() -> None:
    prompts = load("train.jsonl")
    assert {source_name(p) for p in prompts} == HARMFUL_SOURCES | HARMLESS_SOURCES
    counts: Counter[str] = Counter(p.category for p in prompts)
    # The default run takes 30 per category (prompts.train.max_per_category).
    assert min(counts[c] for c in CATEGORIES) >= 30


def test_harmful_prompts_are_adversarial_and_harmless_ones_are_not() -> None:
    for prompt in load("train.jsonl") + load("eval.jsonl"):
        harmful = source_name(prompt) in HARMFUL_SOURCES
        assert (prompt.category == "adversarial") == harmful, prompt.id


def test_ids_are_unique_across_both_files() -> None:
    ids = [prompt.id for name in FILES for prompt in load(name)]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


@pytest.mark.parametrize("name", FILES)
def test_no_duplicate_prompts_within_a_file(name: str) -> None:
    texts = [normalise(prompt.prompt) for prompt in load(name)]
    assert [t for t, n in Counter(texts).items() if n > 1] == []


def test_train_and_eval_share_no_prompt_after_normalising() -> None:
    train = {normalise(prompt.prompt) for prompt in load("train.jsonl")}
    evaluation = {normalise(prompt.prompt) for prompt in load("eval.jsonl")}
    assert train & evaluation == set()


def test_train_and_eval_share_no_source_row() -> None:
    train = {prompt.source for prompt in load("train.jsonl")}
    evaluation = {prompt.source for prompt in load("eval.jsonl")}
    assert train & evaluation == set()


def test_jailbreakbench_topic_pairs_stay_on_one_side() -> None:
    # The harmful and benign rows with the same Index share a topic; the eval set must not
    # hold the twin of a training prompt.
    def jbb_indexes(name: str) -> set[str]:
        return {
            prompt.source.split(":")[1]
            for prompt in load(name)
            if prompt.source.startswith("jailbreakbench-")
        }

    assert jbb_indexes("train.jsonl") & jbb_indexes("eval.jsonl") == set()


def test_builder_reproduces_the_committed_files(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the public CSVs are needed to rebuild the prompt pools")
    # The script imports minicc; make that work whether or not the package is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "tools/build_prompt_sets.py", "--shared", str(SHARED)]
    result = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
