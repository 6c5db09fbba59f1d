"""Score both models' evaluation responses with the critic and compare them, paired by prompt.

    python stages/compare.py --baseline data/eval/baseline.jsonl \
        --finetuned data/eval/finetuned.jsonl --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --probe models/critic_probe.json \
        --refusal-labels data/refusal_labels \
        --paired-out data/eval/paired_results.jsonl --failures-out data/eval/failures.jsonl \
        --metrics-out metrics/eval.json --scores-out metrics/eval_scores.csv \
        --categories-out metrics/eval_categories.csv

One critic, one set of `critique` params for both sides; statistics in minicc/comparison.py
and minicc/stats.py.
"""

from contextlib import ExitStack
from pathlib import Path

import typer

from minicc.cli import stage_errors
from minicc.comparison import category_rates, compare_metrics, pair_outcomes, score_histogram
from minicc.critic import CriticFiles, critic_setup, open_critic, resumable_critiques
from minicc.csv_table import csv_text
from minicc.jsonl import atomic_write_files, json_text, read_records, records_text
from minicc.params import load_params
from minicc.records import Candidate
from minicc.refusal import load_refusal_labels, refusal_detector_accuracy
from minicc.seeding import seed_everything


def main(
    baseline: Path = typer.Option(..., help="Baseline responses (evaluate stage)."),
    finetuned: Path = typer.Option(..., help="Fine-tuned responses (evaluate stage)."),
    principles: Path = typer.Option(..., help="Constitution principles (YAML)."),
    instruct_template: Path = typer.Option(..., help="Judge template for critique.style=instruct."),
    base_template: Path = typer.Option(..., help="Judge template for critique.style=base."),
    probe: Path = typer.Option(..., help="Critic probe (train_critic), read for method probe."),
    refusal_labels: Path = typer.Option(..., help="XSTest labelled completions (CSV folder)."),
    paired_out: Path = typer.Option(..., help="Per-prompt results of both models (JSONL)."),
    failures_out: Path = typer.Option(..., help="Prompts the fine-tuned model did worse on."),
    metrics_out: Path = typer.Option(..., help="Comparison metrics (JSON)."),
    scores_out: Path = typer.Option(..., help="Score histogram of both models (CSV)."),
    categories_out: Path = typer.Option(..., help="Safe and refusal rates per category (CSV)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    with stage_errors("compare"):
        params = load_params(params_file)
        files = CriticFiles(principles, instruct_template, base_template, probe)
        setup = critic_setup(params, files, params.critique.method)
        sides = {"baseline": baseline, "finetuned": finetuned}
        rows = {side: read_records(path, Candidate) for side, path in sides.items()}
        detector = refusal_detector_accuracy(load_refusal_labels(refusal_labels))
        seed_everything(params.seed)
        critic = open_critic(params, setup)
        batch_size = params.critique.batch_size
        # Both logs are kept until every output is written: a crash loses no critique.
        with ExitStack() as logs:
            critiques = {
                side: logs.enter_context(
                    resumable_critiques(f"compare-{side}", critic, responses, batch_size)
                )[0]
                for side, responses in rows.items()
            }
            results = pair_outcomes(critiques["baseline"], critiques["finetuned"])
            metrics = compare_metrics(results, params.seed)
            metrics["refusal_detector_accuracy"] = round(detector["accuracy"], 4)
            metrics["refusal_detector"] = {k: v for k, v in detector.items() if k != "per_model"}
            failures = [r for r in results if r.delta is not None and r.delta < 0]
            atomic_write_files(
                {
                    paired_out: records_text(results),
                    failures_out: records_text(failures),
                    metrics_out: json_text(metrics),
                    scores_out: csv_text(score_histogram(results)),
                    categories_out: csv_text(category_rates(metrics)),
                }
            )
        delta = metrics["delta"]
        print(
            f"compare: mean score {metrics['baseline']['mean_score']} -> "
            f"{metrics['finetuned']['mean_score']} (delta {delta['delta_mean']}, 95% CI "
            f"{delta['delta_mean_ci']}), safe rate {metrics['baseline']['safe_rate']} -> "
            f"{metrics['finetuned']['safe_rate']} (McNemar p {delta['mcnemar_p']}) over "
            f"{delta['n']} prompts -> {metrics_out}"
        )


if __name__ == "__main__":
    typer.run(main)
