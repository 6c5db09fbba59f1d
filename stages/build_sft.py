"""Turn the selected samples into chat-format SFT data, split by prompt into train and val.

    python stages/build_sft.py --selected data/selected.jsonl \
        --candidates data/candidates.jsonl --revisions data/revisions.jsonl \
        --pairs data/preference_pairs.jsonl --train-out data/sft/train.jsonl \
        --val-out data/sft/val.jsonl --pairs-train-out data/sft/pairs_train.jsonl \
        --pairs-val-out data/sft/pairs_val.jsonl --metrics-out metrics/sft.json \
        --detail-out metrics/detail/sft.json

Only `chosen` samples scoring at least `sft.min_score` become examples (with
`sft.trim_refusals`, a refusal cut after the sentence that refuses); a reply the token budget
cut trains as `sft.cut_replies` says (`--candidates` and `--revisions` say how each reply
ended), and so does the chosen reply of each of select's preference pairs (a pair whose chosen
reply would train without the end of the turn is left out); `sft.refusal_pairs` adds preference
pairs of the examples' answers and refusals (minicc/sft.py); no prompt is in both parts (its
preference pairs follow it). `--metrics-out` holds the counts, `--detail-out` the same with the
counts per category.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.endings import finish_reasons
from minicc.jsonl import atomic_write_files, json_text, read_records, records_text
from minicc.params import load_params
from minicc.records import PreferencePair, Selected, load_candidates
from minicc.sft import (
    PairTurns,
    SftSplit,
    build_sft_examples,
    category_counts,
    ending_counts,
    refusal_pairs,
    select_pair_turns,
    split_by_prompt,
)


def split_metrics(
    chosen: int,
    examples: int,
    endings: dict[str, int],
    select_pairs: PairTurns,
    built_pairs: int,
    split: SftSplit,
) -> dict[str, Any]:
    """Every count of the split, per category too (`--detail-out`); `endings` are
    `ending_counts`, `select_pairs` select's pairs as trained, `built_pairs` the
    `sft.refusal_pairs` among the split's pairs."""
    return {
        "chosen_samples": chosen,
        "below_min_score": chosen - examples,
        **endings,
        "select_pairs_trimmed": select_pairs.chosen_trimmed,
        "select_pairs_without_end_of_turn": select_pairs.dropped,
        "refusal_pairs": built_pairs,
        **{
            name: {
                "examples": len(part),
                "prompts": len({e.prompt_id for e in part}),
                "per_category": category_counts(part),
            }
            for name, part in (("train", split.train), ("val", split.val))
        },
        "pairs_train": len(split.pairs_train),
        "pairs_val": len(split.pairs_val),
    }


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """`--metrics-out`: `split_metrics` without the per-category counts."""
    return {
        key: {k: v for k, v in value.items() if k != "per_category"}
        if isinstance(value, dict)
        else value
        for key, value in metrics.items()
    }


def main(
    selected: Annotated[Path, typer.Option(help="Samples written by the select stage.")],
    candidates: Annotated[
        Path, typer.Option(help="Candidates of the generate stage (how each reply ended).")
    ],
    revisions: Annotated[Path, typer.Option(help="Revisions of the revise stage (the same).")],
    pairs: Annotated[Path, typer.Option(help="Preference pairs written by the select stage.")],
    train_out: Annotated[Path, typer.Option(help="Training examples (JSONL, chat messages).")],
    val_out: Annotated[Path, typer.Option(help="Validation examples (JSONL, chat messages).")],
    pairs_train_out: Annotated[
        Path, typer.Option(help="Preference pairs of the training prompts.")
    ],
    pairs_val_out: Annotated[
        Path, typer.Option(help="Preference pairs of the validation prompts.")
    ],
    metrics_out: Annotated[Path, typer.Option(help="Counts per part (JSON).")],
    detail_out: Annotated[Path, typer.Option(help="Counts per part and category (JSON).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("build_sft"):
        params = load_params(params_file)
        samples = read_records(selected, Selected)
        finish_reason_of = finish_reasons(load_candidates(candidates) + load_candidates(revisions))
        examples = build_sft_examples(samples, params.sft, finish_reason_of)
        endings = ending_counts(examples)
        select_pairs = select_pair_turns(
            read_records(pairs, PreferencePair), params.sft, finish_reason_of
        )
        built_pairs = refusal_pairs(examples, params.seed, params.sft.refusal_pairs)
        split = split_by_prompt(
            examples, select_pairs.pairs + built_pairs, params.sft.val_ratio, params.seed
        )
        chosen = sum(s.role == "chosen" for s in samples)
        metrics = split_metrics(
            chosen, len(examples), endings, select_pairs, len(built_pairs), split
        )
        atomic_write_files(
            {
                train_out: records_text(split.train),
                val_out: records_text(split.val),
                pairs_train_out: records_text(split.pairs_train),
                pairs_val_out: records_text(split.pairs_val),
                metrics_out: json_text(headline(metrics)),
                detail_out: json_text(metrics),
            }
        )
        print(
            f"build_sft: {len(split.train)} train / {len(split.val)} val examples "
            f"({chosen - len(examples)} chosen below sft.min_score dropped, "
            f"{endings['refusals_trimmed']} refusals trimmed, {endings['cut_by_token_budget']} "
            f"cut by the token budget: {endings['cut_to_a_sentence']} to a whole sentence, "
            f"{endings['without_end_of_turn']} without the end of the turn), "
            f"{len(split.pairs_train)} / {len(split.pairs_val)} pairs ({len(built_pairs)} of them "
            f"sft.refusal_pairs {params.sft.refusal_pairs}; of select's, "
            f"{select_pairs.chosen_trimmed} with the chosen reply trimmed and "
            f"{select_pairs.dropped} left out without the end of the turn) -> {train_out}, "
            f"{val_out}"
        )


if __name__ == "__main__":
    typer.run(main)
