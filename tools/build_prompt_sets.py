"""Build data/prompts.jsonl (training) and data/eval_prompts.jsonl from the public CSVs.

Run once from the repository root; the pipeline reads only the committed outputs:

    .venv/bin/python tools/build_prompt_sets.py --shared ../shared/data --out data

The output is a pure function of the CSVs: no RNG, rows are taken in the order of the sha256
of their `source` string (e.g. `xstest:104`), so a rerun is byte-identical. data/README.md
gives the selection rule and the licenses.
"""

import hashlib
import sys
from operator import attrgetter
from pathlib import Path
from typing import Annotated

import typer

from minicc.errors import UserError
from minicc.jsonl import write_records
from minicc.records import Category, Prompt
from minicc.source_csv import read_csv
from minicc.text import jaccard

TRAIN_PER_CATEGORY = 30
EVAL_PER_CATEGORY = 20
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

Pool = tuple[list[Prompt], int, int]
"""Candidate prompts with the number to take for eval and for training."""


def make(category: Category, short: str, source: str, key: str, text: str) -> Prompt:
    number = int(key.removeprefix("sst_"))
    return Prompt(
        f"{PREFIX[category]}-{short}-{number:03d}", text.strip(), category, f"{source}:{key}"
    )


def shares(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` integers that differ by at most one, larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def load_pools(shared: Path) -> list[Pool]:
    """Every candidate pool with its quotas, in the order they are filled."""
    advbench = read_csv(shared / "advbench/harmful_behaviors.csv", {"goal"})
    harmful = read_csv(shared / "jailbreakbench/harmful-behaviors.csv", {"Index", "Goal", "Source"})
    benign = read_csv(shared / "jailbreakbench/benign-behaviors.csv", {"Index", "Goal"})
    sst = read_csv(shared / "simplesafetytests/test_cases.csv", {"id", "prompts_final"})
    xstest = read_csv(shared / "xstest/xstest_prompts.csv", {"id", "prompt", "type", "label"})

    adversarial = [
        # AdvBench has no id column: its row number (from 0, after the header) is the id.
        [
            make("adversarial", "advbench", "advbench", str(i), r["goal"])
            for i, r in enumerate(advbench)
        ],
        # JBB copied 18 harmful rows from AdvBench; skipping them keeps one underlying row from
        # landing in train and eval under two names.
        [
            make("adversarial", "jbb", "jailbreakbench-harmful", r["Index"], r["Goal"])
            for r in harmful
            if r["Source"] != "AdvBench"
        ],
        [make("adversarial", "sst", "simplesafetytests", r["id"], r["prompts_final"]) for r in sst],
    ]
    cooperative = [
        make("cooperative", "jbb", "jailbreakbench-benign", r["Index"], r["Goal"])
        for r in benign
        if r["Index"] not in NOT_COOPERATIVE
    ]
    safe = [r for r in xstest if r["label"] == "safe"]
    if not safe:
        raise UserError(f"{shared}/xstest/xstest_prompts.csv: no rows with label 'safe'")
    borderline = [
        [
            make("borderline", "xstest", "xstest", r["id"], r["prompt"])
            for r in safe
            if r["type"] == t
        ]
        for t in sorted({r["type"] for r in safe})
    ]
    # Near-equal shares per adversarial source and per XSTest type, so none dominates.
    return [
        *zip(adversarial, shares(EVAL_PER_CATEGORY, 3), shares(TRAIN_PER_CATEGORY, 3), strict=True),
        *zip(
            borderline,
            shares(EVAL_PER_CATEGORY, len(borderline)),
            shares(TRAIN_PER_CATEGORY, len(borderline)),
            strict=True,
        ),
        (cooperative, EVAL_PER_CATEGORY, TRAIN_PER_CATEGORY),
    ]


def rank(prompt: Prompt) -> str:
    return hashlib.sha256(prompt.source.encode("utf-8")).hexdigest()


def select(pools: list[Pool]) -> tuple[list[Prompt], list[Prompt], int]:
    """Fill each pool's eval quota, then its train quota, walking its rows in hash order.

    Returns (train, eval, number of near-duplicates skipped).
    """
    # A JBB harmful row and its benign twin share everything after the category prefix
    # ("adv-jbb-042", "coop-jbb-042"); keeping a pair on one side stops the eval set from
    # holding the benign twin of a training prompt's topic.
    side_of_pair: dict[str, str] = {}
    chosen: dict[str, list[Prompt]] = {"eval": [], "train": []}
    skipped = 0
    for candidates, eval_quota, train_quota in pools:
        want = {"eval": eval_quota, "train": train_quota}
        for prompt in sorted(candidates, key=rank):
            pair = prompt.id.split("-", 1)[1]
            side = side_of_pair.get(pair) or ("eval" if want["eval"] else "train")
            if not want[side]:
                continue
            if any(
                jaccard(prompt.prompt, other.prompt) >= NEAR_DUPLICATE
                for other in chosen["eval"] + chosen["train"]
            ):
                skipped += 1
                continue
            side_of_pair[pair] = side
            chosen[side].append(prompt)
            want[side] -= 1
        if any(want.values()):
            pool = candidates[0].id.rsplit("-", 1)[0]
            raise UserError(f"pool {pool}: too few distinct rows; still needs {want}")
    return chosen["train"], chosen["eval"], skipped


def main(
    shared: Annotated[Path, typer.Option(help="Folder of public CSVs that SOURCES.md describes.")],
    out: Annotated[Path, typer.Option(help="Folder for prompts.jsonl and eval_prompts.jsonl.")],
) -> None:
    try:
        train, evaluation, skipped = select(load_pools(shared))
        # Category-then-id order keeps diffs small when the rule or a source changes.
        write_records(out / "prompts.jsonl", sorted(train, key=attrgetter("category", "id")))
        write_records(
            out / "eval_prompts.jsonl", sorted(evaluation, key=attrgetter("category", "id"))
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(
        f"wrote {len(train)} training and {len(evaluation)} eval prompts to {out}/; "
        f"skipped {skipped} near-duplicates"
    )


if __name__ == "__main__":
    typer.run(main)
