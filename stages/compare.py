"""Score both models' evaluation responses with the critic and compare them, paired by prompt.

    python stages/compare.py --baseline data/eval/baseline.jsonl \
        --finetuned data/eval/finetuned.jsonl --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --refusal-labels data/refusal_labels \
        --paired-out data/eval/paired_results.jsonl --failures-out data/eval/failures.jsonl \
        --metrics-out metrics/eval.json --scores-out metrics/eval_scores.csv \
        --categories-out metrics/eval_categories.csv

One critic, one set of `critique` params for both sides; statistics in minicc/comparison.py
and minicc/stats.py.
"""

import csv
import io
from pathlib import Path

import typer

from minicc.cli import stage_errors
from minicc.comparison import category_rates, compare_metrics, pair_outcomes, score_histogram
from minicc.constitution import load_constitution
from minicc.critic import Critic, critique_candidates, critique_inputs
from minicc.jsonl import atomic_write_text, read_records, write_json, write_records
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import Candidate
from minicc.refusal import load_refusal_labels, refusal_detector_accuracy
from minicc.resume import resumable
from minicc.seeding import seed_everything


def _csv_text(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(
    baseline: Path = typer.Option(..., help="Baseline responses (evaluate stage)."),
    finetuned: Path = typer.Option(..., help="Fine-tuned responses (evaluate stage)."),
    principles: Path = typer.Option(..., help="Constitution principles (YAML)."),
    instruct_template: Path = typer.Option(..., help="Judge template for critique.style=instruct."),
    base_template: Path = typer.Option(..., help="Judge template for critique.style=base."),
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
        style = params.critique.style
        template = instruct_template if style == "instruct" else base_template
        constitution = load_constitution(principles, template, style)
        sides = {"baseline": baseline, "finetuned": finetuned}
        rows = {side: read_records(path, Candidate) for side, path in sides.items()}
        detector = refusal_detector_accuracy(load_refusal_labels(refusal_labels))
        seed_everything(params.seed)
        critic = Critic(
            load_model(params.models.critic, params.models), constitution, params.critique
        )
        critiques = {}
        for side, responses in rows.items():
            inputs = critique_inputs(
                responses, params.critique, critic.loaded.model_id, constitution
            )
            with resumable(f"compare-{side}", inputs) as log:
                critiques[side], _ = critique_candidates(
                    critic, responses, params.critique.batch_size, log
                )
        results = pair_outcomes(
            critiques["baseline"], critiques["finetuned"], params.critique.safe_threshold
        )
        metrics = compare_metrics(results, params.seed)
        metrics["refusal_detector_accuracy"] = round(detector["accuracy"], 4)
        metrics["refusal_detector"] = {k: v for k, v in detector.items() if k != "per_model"}
        write_records(paired_out, results)
        write_records(failures_out, [r for r in results if r.delta is not None and r.delta < 0])
        write_json(metrics_out, metrics)
        atomic_write_text(scores_out, _csv_text(score_histogram(results)))
        atomic_write_text(categories_out, _csv_text(category_rates(metrics)))
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
