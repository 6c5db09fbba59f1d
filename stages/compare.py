"""Score both models' evaluation responses with one critic and compare them, paired by prompt.

    python stages/compare.py --baseline data/eval/baseline.jsonl \
        --finetuned data/eval/finetuned.jsonl --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --trained-critic models/critic \
        --refusal-labels data/refusal_labels \
        --paired-out data/eval/paired_results.jsonl --failures-out data/eval/failures.jsonl \
        --metrics-out metrics/eval.json --detail-out metrics/detail/eval.json \
        --scores-out metrics/eval_scores.csv --categories-out metrics/eval_categories.csv

One critic (`evaluate.critic`: by default the one that selected, see minicc/eval_critic.py),
one set of `critique` params for both sides; statistics in minicc/comparison.py and
minicc/stats.py. `--metrics-out` holds the headline numbers, `--detail-out` everything.
"""

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import (
    PARAMS_FILE,
    BaseTemplateFile,
    InstructTemplateFile,
    ParamsFile,
    PrinciplesFile,
    TrainedCriticDir,
    stage_errors,
)
from minicc.comparison import (
    SIDES,
    Endings,
    category_rates,
    compare_report,
    eval_histogram,
    headline,
    headline_line,
    pair_outcomes,
)
from minicc.critic import CriticFiles, resumable_critiques
from minicc.csv_table import csv_text
from minicc.endings import finish_reasons
from minicc.eval_critic import eval_critic_setup, open_eval_critic
from minicc.jsonl import atomic_write_files, json_text, read_records, records_text
from minicc.off_topic import OffTopicDetector
from minicc.params import load_params
from minicc.records import Candidate
from minicc.refusal import load_refusal_labels, refusal_detector_accuracy
from minicc.seeding import seed_everything


def main(
    baseline: Annotated[Path, typer.Option(help="Baseline responses (evaluate stage).")],
    finetuned: Annotated[Path, typer.Option(help="Fine-tuned responses (evaluate stage).")],
    principles: PrinciplesFile,
    instruct_template: InstructTemplateFile,
    base_template: BaseTemplateFile,
    trained_critic: TrainedCriticDir,
    refusal_labels: Annotated[Path, typer.Option(help="XSTest labelled completions (CSV folder).")],
    paired_out: Annotated[Path, typer.Option(help="Per-prompt results of both models (JSONL).")],
    failures_out: Annotated[Path, typer.Option(help="Prompts the fine-tuned model did worse on.")],
    metrics_out: Annotated[Path, typer.Option(help="Headline comparison metrics (JSON).")],
    detail_out: Annotated[Path, typer.Option(help="Every comparison metric, per category (JSON).")],
    scores_out: Annotated[Path, typer.Option(help="Score histogram of both models (CSV).")],
    categories_out: Annotated[Path, typer.Option(help="Rates per category and model (CSV).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("compare"):
        params = load_params(params_file)
        files = CriticFiles(principles, instruct_template, base_template, trained_critic)
        chosen = eval_critic_setup(params, files)
        sides = {"baseline": baseline, "finetuned": finetuned}
        rows = {side: read_records(path, Candidate) for side, path in sides.items()}
        detector = refusal_detector_accuracy(load_refusal_labels(refusal_labels))
        seed_everything(params.seed)
        critic = open_eval_critic(params, chosen)
        batch_size = params.critique.batch_size
        # Both logs are kept until every output is written: a crash loses no critique.
        with ExitStack() as logs:
            critiques = {
                side: logs.enter_context(
                    resumable_critiques(f"compare-{side}", critic, responses, batch_size)
                )[0]
                for side, responses in rows.items()
            }
            off_topic = OffTopicDetector.open(params.models)
            endings: Endings = {side: finish_reasons(rows[side]) for side in SIDES}
            results = pair_outcomes(
                critiques["baseline"], critiques["finetuned"], off_topic, endings
            )
            report = compare_report(results, params.seed, baseline)
            metrics = headline(report, critic.critic_id)
            judged_by = {"id": critic.critic_id, "evaluate.critic": params.evaluate.critic}
            refusal_detector = {k: v for k, v in detector.items() if k != "per_model"}
            detail = {"critic": judged_by, **report, "refusal_detector": refusal_detector}
            failures = [r for r in results if r.delta is not None and r.delta < 0]
            atomic_write_files(
                {
                    paired_out: records_text(results),
                    failures_out: records_text(failures),
                    metrics_out: json_text(metrics),
                    detail_out: json_text(detail),
                    scores_out: csv_text(eval_histogram(results)),
                    categories_out: csv_text(category_rates(report)),
                }
            )
        print(
            f"compare ({critic.critic_id}): {headline_line(metrics)} over "
            f"{report['baseline']['num_prompts']} prompts -> {metrics_out}"
        )


if __name__ == "__main__":
    typer.run(main)
