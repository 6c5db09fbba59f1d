"""Materialise the training and eval prompt sets from the sources in params.yaml (`prompts`).

    python stages/prepare_prompts.py --train-pool data/prompt_pool/train.jsonl \
        --eval-pool data/prompt_pool/eval.jsonl \
        --train-out data/prompts/train.jsonl --eval-out data/prompts/eval.jsonl

A source whose `path` is null is the committed pool passed here; any other is a local JSONL,
CSV or Parquet file or a Hugging Face dataset (minicc/prompt_source.py). Each set is capped per
category (`max_per_category`, drawn by `seed`); the eval set must hold harmful and harmless
prompts and share none with the training set.
"""

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.jsonl import atomic_write_files, records_text
from minicc.params import load_params
from minicc.prompt_source import cap_per_category, check_disjoint, check_eval_set, read_source


def main(
    train_pool: Annotated[
        Path, typer.Option(help="Training pool read when prompts.train.path is null.")
    ],
    eval_pool: Annotated[Path, typer.Option(help="Eval pool read when prompts.eval.path is null.")],
    train_out: Annotated[Path, typer.Option(help="Where to write the training prompts (JSONL).")],
    eval_out: Annotated[Path, typer.Option(help="Where to write the eval prompts (JSONL).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("prepare_prompts"):
        params = load_params(params_file)
        sources = params.prompts
        train_name = sources.train.path or str(train_pool)
        eval_name = sources.eval.path or str(eval_pool)
        train = read_source(sources.train, train_pool, "prompts.train")
        evaluation = read_source(sources.eval, eval_pool, "prompts.eval")
        check_disjoint(train, evaluation, (train_name, eval_name))
        train = cap_per_category(train, sources.train.max_per_category, params.seed, "train")
        evaluation = cap_per_category(
            evaluation, sources.eval.max_per_category, params.seed, "eval"
        )
        check_eval_set(evaluation, eval_name)
        atomic_write_files({train_out: records_text(train), eval_out: records_text(evaluation)})
        print(
            f"prepare_prompts: {len(train)} training prompts from {train_name} "
            f"{dict(Counter(p.category for p in train))}, {len(evaluation)} eval prompts from "
            f"{eval_name} {dict(Counter(p.category for p in evaluation))} -> {train_out}, "
            f"{eval_out}"
        )


if __name__ == "__main__":
    typer.run(main)
