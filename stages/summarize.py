"""Safety metrics of all candidates and of the selected set, for `dvc metrics` and plots.

    python stages/summarize.py --critiques data/critiques.jsonl --selected data/selected.jsonl \
        --metrics-out metrics/pipeline.json --detail-out metrics/detail/pipeline.json \
        --histogram-out metrics/score_distribution.csv

`--metrics-out` holds the overall numbers, `--detail-out` the same per category too. The
off-topic detector (minicc/off_topic.py) runs on `models.device` in `models.dtype`.
"""

from pathlib import Path
from typing import Annotated

import typer

from minicc.cli import PARAMS_FILE, ParamsFile, stage_errors
from minicc.csv_table import csv_text
from minicc.jsonl import atomic_write_files, json_text, read_records
from minicc.off_topic import OffTopicDetector
from minicc.params import load_params
from minicc.records import Critique, Selected
from minicc.summary import candidate_histogram, format_table, headline, summarize


def main(
    critiques: Annotated[Path, typer.Option(help="Critiques written by the critique stage.")],
    selected: Annotated[Path, typer.Option(help="Samples written by the select stage.")],
    metrics_out: Annotated[Path, typer.Option(help="Where to write the headline metrics (JSON).")],
    detail_out: Annotated[
        Path, typer.Option(help="Where to write every metric, per category (JSON).")
    ],
    histogram_out: Annotated[Path, typer.Option(help="Where to write the score histogram (CSV).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("summarize"):
        params = load_params(params_file)
        critique_rows = read_records(critiques, Critique)
        selected_rows = read_records(selected, Selected)
        off_topic = OffTopicDetector.open(params.models)
        report = summarize(critique_rows, selected_rows, off_topic)
        atomic_write_files(
            {
                metrics_out: json_text(headline(report)),
                detail_out: json_text(report),
                histogram_out: csv_text(candidate_histogram(critique_rows)),
            }
        )
        print(format_table(report))
        print(f"summarize: -> {metrics_out}, {detail_out}, {histogram_out}")


if __name__ == "__main__":
    typer.run(main)
