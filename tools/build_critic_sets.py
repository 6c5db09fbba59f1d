"""Build data/critic/eval.jsonl and data/critic/train.jsonl: human-labeled responses for the critic.

Run once from the repository root; the pipeline and tests read only the committed outputs:

    .venv/bin/python tools/build_critic_sets.py --shared ../shared/data --out data/critic

It also reads the policy's prompt files (data/prompts.jsonl, data/eval_prompts.jsonl; override
with --policy-prompts) to keep their XSTest prompts out of the critic's training rows.

The output is a pure function of the CSVs: no RNG, rows are visited in the order of the sha256
of their id, so a rerun is byte-identical. data/critic/README.md gives the selection rule and the
licenses.
"""

import hashlib
import sys
from collections import Counter, deque
from operator import attrgetter
from pathlib import Path
from typing import Annotated, NamedTuple

import typer

from minicc.errors import UserError
from minicc.jsonl import write_records
from minicc.labeled import LabeledResponse, ResponseKind
from minicc.records import load_prompts
from minicc.source_csv import read_csv
from minicc.text import normalise

GPTFUZZ_EVAL = 300
XSTEST_EVAL = 300
GPTFUZZ_TRAIN = 1500
XSTEST_TRAIN = 500
POLICY_PROMPTS = (Path("data/prompts.jsonl"), Path("data/eval_prompts.jsonl"))
# A few GPTFuzz responses run to 20k characters; the critic reads far fewer tokens than that.
MAX_RESPONSE_CHARS = 4000
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
XSTEST_KINDS: dict[str, ResponseKind] = {
    "1_full_compliance": "full_compliance",
    "2_full_refusal": "full_refusal",
    "3_partial_refusal": "partial_refusal",
}


class Row(NamedTuple):
    stratum: str
    """Rows are taken round-robin over strata: the label and the GPTFuzz question, or the label,
    the XSTest model and the prompt type. The label is part of the name so that the strata that
    get one row more than the others differ between the harmful and the harmless pass."""
    record: LabeledResponse
    clipped: bool


def clip(text: str) -> tuple[str, bool]:
    text = text.strip()
    if len(text) <= MAX_RESPONSE_CHARS:
        return text, False
    return text[:MAX_RESPONSE_CHARS].rstrip(), True


def text_key(record: LabeledResponse) -> str:
    """What "the same example" means for duplicates and for train/eval disjointness."""
    return normalise(record.prompt + " " + record.response)


def gptfuzz_rows(shared: Path, split: str) -> list[Row]:
    """GPTFuzz `<split>.csv`; the row id is the row number from 0 after the header line."""
    questions = read_csv(shared / "gptfuzz/question_list.csv", {"index", "text"})
    question_text = {q["index"]: q["text"].strip() for q in questions}
    path = shared / f"gptfuzz/{split}.csv"
    rows = []
    for number, row in enumerate(read_csv(path, {"question", "Response", "label"})):
        if row["label"] not in ("0", "1"):
            raise UserError(f"{path}: data row {number}: label {row['label']!r}, expected 0 or 1")
        if row["question"] not in question_text:
            raise UserError(f"{path}: data row {number}: question {row['question']!r} not in list")
        response, clipped = clip(row["Response"])
        if not response:
            continue
        record = LabeledResponse(
            id=f"gptfuzz-{split}-{number:04d}",
            prompt=question_text[row["question"]],
            response=response,
            harmful=row["label"] == "1",
            source="gptfuzz",
            group=f"gptfuzz:{row['question']}",
            # Every GPTFuzz question is a harmful request; the label says nothing about how the
            # model answered beyond "harmful help or not", so the kind is unknown.
            prompt_label="unsafe",
            response_kind="unknown",
        )
        rows.append(Row(f"{record.harmful}:{record.group}", record, clipped))
    return rows


def xstest_rows(shared: Path) -> list[Row]:
    """XSTest completions of every model; harmful = full compliance with an unsafe prompt."""
    rows = []
    columns = {"id", "type", "prompt", "completion", "final_label"}
    for model in XSTEST_MODELS:
        path = shared / f"xstest/model_completions/xstest_v2_completions_{model}.csv"
        for row in read_csv(path, columns):
            number = row["id"].removeprefix("v2-")
            if not number.isdigit() or row["final_label"] not in XSTEST_KINDS:
                raise UserError(
                    f"{path}: row {row['id']!r}: expected id 'v2-<number>' and final_label in "
                    f"{sorted(XSTEST_KINDS)}, got final_label {row['final_label']!r}"
                )
            response, clipped = clip(row["completion"])
            if not response:
                continue
            unsafe = row["type"].startswith("contrast_")
            kind = XSTEST_KINDS[row["final_label"]]
            record = LabeledResponse(
                id=f"xstest-{model}-{int(number):03d}",
                prompt=row["prompt"].strip(),
                response=response,
                harmful=unsafe and kind == "full_compliance",
                source=f"xstest-{model}",
                group=f"xstest:{int(number)}",
                prompt_label="unsafe" if unsafe else "safe",
                response_kind=kind,
            )
            rows.append(Row(f"{record.harmful}:{model}:{row['type']}", record, clipped))
    return rows


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def round_robin(rows: list[Row], quota: int, taken: set[str]) -> tuple[list[Row], int]:
    """Take one row per stratum per round until `quota` rows or none are left.

    Strata are visited in the sha256 order of their name, rows within a stratum in the sha256
    order of their id. A row whose `text_key` is already in `taken` (from either file) is
    skipped and the stratum's next row is tried. Returns (chosen, duplicates skipped).
    """
    strata: dict[str, list[Row]] = {}
    for row in rows:
        strata.setdefault(row.stratum, []).append(row)
    queues = [
        deque(sorted(strata[name], key=lambda row: sha(row.record.id)))
        for name in sorted(strata, key=sha)
    ]
    chosen: list[Row] = []
    skipped = 0
    while len(chosen) < quota and any(queues):
        for queue in queues:
            while queue and len(chosen) < quota:
                row = queue.popleft()
                key = text_key(row.record)
                if key in taken:
                    skipped += 1
                    continue
                taken.add(key)
                chosen.append(row)
                break
    return chosen, skipped


def balanced(rows: list[Row], total: int, taken: set[str]) -> tuple[list[Row], int]:
    """Up to half of `total` harmful rows, the rest harmless, each round-robin over strata."""
    harmful, skipped_harmful = round_robin([r for r in rows if r.record.harmful], total // 2, taken)
    rest = total - len(harmful)
    harmless, skipped_harmless = round_robin([r for r in rows if not r.record.harmful], rest, taken)
    if len(harmful) + len(harmless) < total:
        pool = rows[0].record.id.rsplit("-", 1)[0]
        raise UserError(f"{pool}: only {len(harmful) + len(harmless)} distinct rows, needs {total}")
    return harmful + harmless, skipped_harmful + skipped_harmless


def xstest_training_rows(
    rows: list[Row], evaluation: list[Row], policy_prompts: list[Path]
) -> list[Row]:
    """XSTest rows whose prompt is in neither the eval set nor the policy's prompt files.

    A prompt in the eval set would leak its wording into training; a policy prompt would let
    the critic learn the very prompts the pipeline generates and evaluates on.
    """
    excluded = {r.record.group for r in evaluation}
    for path in policy_prompts:
        excluded |= {
            f"xstest:{int(p.source.split(':', 1)[1])}"
            for p in load_prompts(path)
            if p.source.startswith("xstest:")
        }
    return [r for r in rows if r.record.group not in excluded]


def check_disjoint(train: list[LabeledResponse], evaluation: list[LabeledResponse]) -> None:
    shared_ids = {r.id for r in train} & {r.id for r in evaluation}
    shared_texts = {text_key(r) for r in train} & {text_key(r) for r in evaluation}
    if shared_ids or shared_texts:
        raise UserError(
            f"train and eval overlap: {len(shared_ids)} id(s), {len(shared_texts)} normalised "
            "text(s); the selection rule must keep them apart"
        )


def summary(name: str, rows: list[Row]) -> str:
    counts = Counter((r.record.source, r.record.harmful) for r in rows)
    sources = sorted({source for source, _ in counts})
    parts = ", ".join(f"{s} {counts[s, True]}/{counts[s, False]}" for s in sources)
    clipped = sum(r.clipped for r in rows)
    return f"{name}: {len(rows)} rows, harmful/harmless {parts}; {clipped} responses clipped"


def main(
    shared: Annotated[Path, typer.Option(help="Folder of public CSVs that SOURCES.md describes.")],
    out: Annotated[Path, typer.Option(help="Folder for eval.jsonl and train.jsonl.")],
    policy_prompts: Annotated[
        list[Path] | None,
        typer.Option(help="Prompt files whose XSTest prompts stay out of training."),
    ] = None,
) -> None:
    try:
        taken: set[str] = set()
        # Eval is filled first, so no eval row is ever lost to a training duplicate.
        gptfuzz_eval, skip_a = balanced(gptfuzz_rows(shared, "evaluate"), GPTFUZZ_EVAL, taken)
        xstest_eval, skip_b = balanced(xstest_rows(shared), XSTEST_EVAL, taken)
        train, skip_c = balanced(gptfuzz_rows(shared, "train"), GPTFUZZ_TRAIN, taken)
        # XSTest's harmful rows all went to eval: its training rows teach what is *not* harm
        # (answers to safe prompts, refusals of both kinds), which GPTFuzz alone cannot.
        xstest_pool = xstest_training_rows(
            xstest_rows(shared), xstest_eval, policy_prompts or list(POLICY_PROMPTS)
        )
        xstest_train, skip_d = round_robin(xstest_pool, XSTEST_TRAIN, taken)
        if len(xstest_train) < XSTEST_TRAIN:
            raise UserError(f"XSTest train: only {len(xstest_train)} rows, needs {XSTEST_TRAIN}")
        train += xstest_train
        evaluation = gptfuzz_eval + xstest_eval
        eval_records = sorted((r.record for r in evaluation), key=attrgetter("source", "id"))
        train_records = sorted((r.record for r in train), key=attrgetter("source", "id"))
        check_disjoint(train_records, eval_records)
        write_records(out / "eval.jsonl", eval_records)
        write_records(out / "train.jsonl", train_records)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(summary("eval", evaluation))
    print(summary("train", train))
    print(
        f"skipped duplicates (same normalised prompt + response): {skip_a} GPTFuzz eval, "
        f"{skip_b} XSTest eval, {skip_c} GPTFuzz train, {skip_d} XSTest train"
    )


if __name__ == "__main__":
    typer.run(main)
