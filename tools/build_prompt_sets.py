"""Build the prompt pools data/prompt_pool/{train,eval}.jsonl from the public CSVs.

Run once from the repository root; the pipeline reads only the committed outputs (the
prepare_prompts stage caps the training pool per category):

    .venv/bin/python tools/build_prompt_sets.py --shared ../shared/data --out data/prompt_pool

The eval set is a fixed quota per source; the training pool is every other row of the same
sources. The output is a pure function of the CSVs: no RNG, rows are taken in the order of the
sha256 of their `source` string (e.g. `xstest:104`), so a rerun is byte-identical.
data/README.md gives the selection rule and the licenses.
"""

import hashlib
import sys
from operator import attrgetter
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from minicc.errors import UserError
from minicc.jsonl import write_records
from minicc.records import Category, Prompt
from minicc.text import word_set

# Eval quotas: at least 150 harmful and 150 harmless prompts, 120 of them XSTest safe.
EVAL_ADVBENCH = 55
EVAL_JBB_HARMFUL = 40
EVAL_SST = 45
EVAL_PER_XSTEST_TYPE = 12
EVAL_COOPERATIVE = 40
GPTFUZZ_EVAL_QUESTIONS = range(80, 100)
"""The critic's GPTFuzz eval questions (tools/build_critic_sets.py): all of them are policy eval
prompts and the other 80 training prompts, so the critic never trains on an eval question."""
# AdvBench is full of one-word rewrites ("Write a tutorial ..." / "Provide a tutorial ...");
# treating those as duplicates keeps a paraphrase of a training prompt out of the eval set.
# Identical normalised text has similarity 1.0, so exact duplicates are caught too.
NEAR_DUPLICATE = 0.8
# JBB "benign" rows that a safety data set should not teach a model to answer in full.
NOT_COOPERATIVE = {
    "26": "a thread on the most common ways people commit suicide",
    "49": "evading plagiarism detection",
    "82": "persuading a doctor to prescribe painkillers",
}
PREFIX = {"adversarial": "adv", "borderline": "bord", "cooperative": "coop"}

Pool = tuple[list[Prompt], int]
"""Candidate prompts and the number of them the eval set takes; the rest go to training."""


def read_table(path: Path, columns: set[str]) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts of strings, after checking it has the columns needed."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; pass --shared the folder SOURCES.md describes")
    # Every cell as text, "" kept as "" (not NaN), so ids such as "007" keep their zeros.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = columns - set(frame.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {sorted(missing)}, needs {sorted(columns)}")
    if frame.empty:
        raise UserError(f"{path}: no data rows after the header")
    return frame.to_dict("records")


def make(category: Category, short: str, source: str, key: str, text: str) -> Prompt:
    number = int(key.removeprefix("sst_"))
    return Prompt(
        f"{PREFIX[category]}-{short}-{number:03d}", text.strip(), category, f"{source}:{key}"
    )


def shares(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` integers that differ by at most one, larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def load_pools(shared: Path) -> list[Pool]:
    """Every candidate pool with its eval quota, in the order they are filled."""
    advbench = read_table(shared / "advbench/harmful_behaviors.csv", {"goal"})
    harmful = read_table(
        shared / "jailbreakbench/harmful-behaviors.csv", {"Index", "Goal", "Source"}
    )
    benign = read_table(shared / "jailbreakbench/benign-behaviors.csv", {"Index", "Goal"})
    sst = read_table(shared / "simplesafetytests/test_cases.csv", {"id", "prompts_final"})
    questions = read_table(shared / "gptfuzz/question_list.csv", {"index", "text"})
    xstest = read_table(shared / "xstest/xstest_prompts.csv", {"id", "prompt", "type", "label"})

    gptfuzz = [make("adversarial", "gptfuzz", "gptfuzz", q["index"], q["text"]) for q in questions]
    held_out = {str(q) for q in GPTFUZZ_EVAL_QUESTIONS}
    adversarial: list[Pool] = [
        # AdvBench has no id column: its row number (from 0, after the header) is the id.
        (
            [
                make("adversarial", "advbench", "advbench", str(i), r["goal"])
                for i, r in enumerate(advbench)
            ],
            EVAL_ADVBENCH,
        ),
        # JBB copied 18 harmful rows from AdvBench; skipping them keeps one underlying row from
        # landing in train and eval under two names.
        (
            [
                make("adversarial", "jbb", "jailbreakbench-harmful", r["Index"], r["Goal"])
                for r in harmful
                if r["Source"] != "AdvBench"
            ],
            EVAL_JBB_HARMFUL,
        ),
        (
            [
                make("adversarial", "sst", "simplesafetytests", r["id"], r["prompts_final"])
                for r in sst
            ],
            EVAL_SST,
        ),
        ([p for p in gptfuzz if p.source.split(":")[1] in held_out], len(held_out)),
        ([p for p in gptfuzz if p.source.split(":")[1] not in held_out], 0),
    ]
    safe = [r for r in xstest if r["label"] == "safe"]
    if not safe:
        raise UserError(f"{shared}/xstest/xstest_prompts.csv: no rows with label 'safe'")
    # An equal share per XSTest type, so none dominates.
    borderline: list[Pool] = [
        (
            [
                make("borderline", "xstest", "xstest", r["id"], r["prompt"])
                for r in safe
                if r["type"] == t
            ],
            EVAL_PER_XSTEST_TYPE,
        )
        for t in sorted({r["type"] for r in safe})
    ]
    cooperative = [
        make("cooperative", "jbb", "jailbreakbench-benign", r["Index"], r["Goal"])
        for r in benign
        if r["Index"] not in NOT_COOPERATIVE
    ]
    return [*adversarial, *borderline, (cooperative, EVAL_COOPERATIVE)]


def rank(prompt: Prompt) -> str:
    return hashlib.sha256(prompt.source.encode("utf-8")).hexdigest()


def pair_key(prompt: Prompt) -> str:
    """The id less its category prefix: a JBB harmful row and its benign twin share it."""
    return prompt.id.split("-", 1)[1]


def select(pools: list[Pool]) -> tuple[list[Prompt], list[Prompt], int]:
    """Fill each pool's eval quota walking its rows in hash order; the rest train.

    Returns (train, eval, number of near-duplicates skipped).
    """
    # A JBB harmful row and its benign twin share everything after the category prefix
    # ("adv-jbb-042", "coop-jbb-042"); keeping a pair on one side stops the eval set from
    # holding the benign twin of a training prompt's topic. A twin follows its pair even when
    # that takes the eval set past the benign pool's quota.
    side_of_pair: dict[str, str] = {}
    chosen: dict[str, list[Prompt]] = {"eval": [], "train": []}
    words: list[frozenset[str]] = []
    skipped = 0
    for candidates, eval_quota in pools:
        wanted = eval_quota
        # Twins first, so that the quota counts them before it takes rows of free choice.
        order = sorted(candidates, key=lambda p: (pair_key(p) not in side_of_pair, rank(p)))
        for prompt in order:
            pair = pair_key(prompt)
            side = side_of_pair.get(pair) or ("eval" if wanted else "train")
            mine = word_set(prompt.prompt)
            if any(similarity(mine, other) >= NEAR_DUPLICATE for other in words):
                skipped += 1
                continue
            side_of_pair[pair] = side
            chosen[side].append(prompt)
            words.append(mine)
            wanted -= side == "eval" and wanted > 0
        if wanted:
            pool = candidates[0].id.rsplit("-", 1)[0]
            raise UserError(f"pool {pool}: too few distinct rows; eval still needs {wanted}")
    return chosen["train"], chosen["eval"], skipped


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """minicc.text.jaccard on word sets computed once (the pools hold about 1,100 prompts)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def main(
    shared: Annotated[Path, typer.Option(help="Folder of public CSVs that SOURCES.md describes.")],
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl and eval.jsonl.")],
) -> None:
    try:
        train, evaluation, skipped = select(load_pools(shared))
        # Category-then-id order keeps diffs small when the rule or a source changes.
        write_records(out / "train.jsonl", sorted(train, key=attrgetter("category", "id")))
        write_records(out / "eval.jsonl", sorted(evaluation, key=attrgetter("category", "id")))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(
        f"wrote {len(train)} training and {len(evaluation)} eval prompts to {out}/; "
        f"skipped {skipped} near-duplicates"
    )


if __name__ == "__main__":
    typer.run(main)
