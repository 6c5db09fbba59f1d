"""Measure the configured critic against labeled replies: `metrics/critic.json`.

    python stages/critic_eval.py --labeled data/critic/eval.jsonl \
        --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml --trained-critic models/critic \
        --scored-out data/critic_eval/scored.jsonl --metrics-out metrics/critic.json \
        --detail-out metrics/detail/critic.json --roc-out metrics/critic_roc.csv \
        --calibration-out metrics/critic_calibration.csv

Every row goes through the critique stage's own path (`critic_setup`, `open_critic`,
`critique_candidates`) with the same params, so the numbers describe the critic the pipeline
uses. What is measured
is in minicc/critic_metrics.py. `dvc metrics diff` then compares two critics directly on the
headline numbers; `--detail-out` holds every number, per source too.
"""

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
from minicc.critic import CriticFiles, critic_setup, open_critic, resumable_critiques
from minicc.critic_metrics import (
    as_candidate,
    critic_headline,
    critic_report,
    curves,
    score_rows,
)
from minicc.csv_table import csv_text
from minicc.jsonl import atomic_write_files, json_text, records_text
from minicc.labeled import load_labeled
from minicc.params import load_params
from minicc.seeding import seed_everything


def main(
    labeled: Annotated[Path, typer.Option(help="Held-out labeled rows (JSONL).")],
    principles: PrinciplesFile,
    instruct_template: InstructTemplateFile,
    base_template: BaseTemplateFile,
    trained_critic: TrainedCriticDir,
    scored_out: Annotated[Path, typer.Option(help="Per-row labels and critic scores (JSONL).")],
    metrics_out: Annotated[Path, typer.Option(help="Headline critic quality metrics (JSON).")],
    detail_out: Annotated[
        Path, typer.Option(help="Every critic quality metric, per source (JSON).")
    ],
    roc_out: Annotated[Path, typer.Option(help="ROC curve points (CSV).")],
    calibration_out: Annotated[Path, typer.Option(help="Calibration bins (CSV).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("critic_eval"):
        params = load_params(params_file)
        files = CriticFiles(principles, instruct_template, base_template, trained_critic)
        setup = critic_setup(params, files, params.critique.method)
        rows = load_labeled(labeled)
        seed_everything(params.critic_seed)
        critic = open_critic(params, setup)
        candidates = [as_candidate(row) for row in rows]
        batch_size = params.critique.batch_size
        with resumable_critiques("critic_eval", critic, candidates, batch_size) as (critiques, _):
            scored = score_rows(rows, critiques, params.critique.method)
            report = critic_report(rows, scored)
            roc, calibration = curves(scored)
            metrics = {"method": params.critique.method, "critic": critic.critic_id, **report}
            atomic_write_files(
                {
                    scored_out: records_text(scored),
                    metrics_out: json_text(critic_headline(metrics)),
                    detail_out: json_text(metrics),
                    roc_out: csv_text(roc),
                    calibration_out: csv_text(calibration),
                }
            )
        preference = report["preference"]
        print(
            f"critic_eval: {critic.critic_id} ({params.critique.method}) on {report['rows']} "
            f"rows: AUROC {report['auroc']}, balanced accuracy {report['balanced_accuracy']}, "
            f"helpfulness AUROC {report['helpfulness_auroc']}; pairwise "
            + ", ".join(f"{kind} {m['accuracy']}" for kind, m in preference.items())
            + f" -> {metrics_out}"
        )


if __name__ == "__main__":
    typer.run(main)
