"""The trained critic's directory, train_critic's output: the method it was trained for, its files.

    models/critic/
        critic.json   {"method": ...}, written last: a directory without it is an interrupted write
        probe.json    method probe: the heads on frozen features (minicc/probe.py)
        request_classifier/   with the probe, when critic_probe.request_epochs > 0: the
                      fine-tuned request classifier it averages (minicc/request_classifier.py)
        lora/         method lora: the fine-tuned classifier (minicc/critic_lora.py)

train_critic trains only what `critique.method` names, so a run pays for one critic. Method
judge trains nothing; its directory holds critic.json alone, so the stage has the same output
for every method and DVC reruns it when the method changes.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast, get_args

from minicc.errors import UserError
from minicc.jsonl import json_text, publish_directory
from minicc.params import CriticMethod

MARKER = "critic.json"
PROBE_FILE = "probe.json"
LORA_DIR = "lora"


def write_trained_critic(
    directory: Path, method: CriticMethod, fill: Callable[[Path], None]
) -> None:
    """Publish `directory` whole: `fill` writes the method's files into an empty staging
    directory, then the marker naming `method` goes in last."""

    def build(staging: Path) -> str:
        fill(staging)
        return json_text({"method": method}).rstrip("\n")

    publish_directory(directory, MARKER, build)


def is_trained_critic(path: Path) -> bool:
    """Whether `path` is a directory train_critic finished: its marker is written last."""
    return (path / MARKER).is_file()


def recorded_method(directory: Path) -> CriticMethod:
    """The method the trained critic in `directory` was trained for (its marker's).

    A directory that train_critic has not finished, or a marker that is not one, is an error
    that says how to retrain.
    """
    marker = directory / MARKER
    if not marker.is_file():
        raise UserError(
            f"{directory}: no trained critic; run `dvc repro train_critic`, or set "
            "critique.method to 'judge'"
        )
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("method")
    except (ValueError, AttributeError):
        raise UserError(f"{marker}: not a trained-critic marker; rerun train_critic") from None
    if recorded not in get_args(CriticMethod):
        raise UserError(f"{marker}: unknown method {recorded!r}; rerun train_critic")
    return cast(CriticMethod, recorded)


def trained_path(directory: Path, method: CriticMethod) -> Path:
    """Where the critic of `method` lies in `directory` (probe.json or lora/).

    A directory that train_critic has not finished, or one trained for another method, is an
    error that says how to retrain.
    """
    if not is_trained_critic(directory):
        raise UserError(
            f"{directory}: no trained critic; critique.method {method!r} needs one: run "
            "`dvc repro train_critic`, or set critique.method to 'judge'"
        )
    recorded = recorded_method(directory)
    if recorded != method:
        raise UserError(
            f"{directory}: the trained critic is for method {recorded!r}, but critique.method is "
            f"{method!r}; run `dvc repro train_critic`"
        )
    return directory / (PROBE_FILE if method == "probe" else LORA_DIR)
