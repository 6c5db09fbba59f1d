"""The committed prompt sets: size, schema, train/eval separation and a reproducible build.

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
DATA = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"
FILES = ("prompts.jsonl", "eval_prompts.jsonl")


def load(name: str) -> list[Prompt]:
    return load_prompts(DATA / name)


@pytest.mark.parametrize(
    ("name", "total", "per_category"),
    [("prompts.jsonl", 90, 20), ("eval_prompts.jsonl", 60, 15)],
)
def test_file_loads_and_has_enough_prompts_per_category(
    name: str, total: int, per_category: int
) -> None:
    prompts = load(name)
    counts: Counter[str] = Counter(prompt.category for prompt in prompts)
    assert len(prompts) >= total
    short = {
        category: counts[category] for category in CATEGORIES if counts[category] < per_category
    }
    assert short == {}, f"categories with fewer than {per_category} prompts"


def test_ids_are_unique_across_both_files() -> None:
    ids = [prompt.id for name in FILES for prompt in load(name)]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


@pytest.mark.parametrize("name", FILES)
def test_no_duplicate_prompts_within_a_file(name: str) -> None:
    texts = [normalise(prompt.prompt) for prompt in load(name)]
    assert [t for t, n in Counter(texts).items() if n > 1] == []


def test_train_and_eval_share_no_prompt_after_normalising() -> None:
    train = {normalise(prompt.prompt) for prompt in load("prompts.jsonl")}
    evaluation = {normalise(prompt.prompt) for prompt in load("eval_prompts.jsonl")}
    assert train & evaluation == set()


def test_train_and_eval_share_no_source_row() -> None:
    train = {prompt.source for prompt in load("prompts.jsonl")}
    evaluation = {prompt.source for prompt in load("eval_prompts.jsonl")}
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

    assert jbb_indexes("prompts.jsonl") & jbb_indexes("eval_prompts.jsonl") == set()


def test_builder_reproduces_the_committed_files(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the public CSVs are needed to rebuild the prompt sets")
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
