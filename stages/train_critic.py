"""Train the critic that `critique.method` names, into train_critic's directory.

    python stages/train_critic.py --train data/critic/train.jsonl \
        --requests data/critic/requests.jsonl --principles constitution/principles.yaml \
        --instruct-template constitution/critic_instruct.yaml \
        --base-template constitution/critic_base.yaml \
        --out models/critic --metrics-out metrics/critic_train.json \
        --detail-out metrics/detail/critic_train.json

probe: the critic model reads every labeled row through the judge template (`critique.style`);
the hidden states of `critic_probe.layer`, sentence embeddings of request and reply and the
reply's text statistics become features; minicc/probe.py says how the heads and the rubric's
score work. Feature extraction is crash-safe like critique; the fits are convex and solved to
convergence, so a rerun gives the same probe. With `critic_probe.request_epochs` > 0 it also
fine-tunes the request classifier the request head is averaged with
(minicc/request_classifier.py; seeded by `critic_seed`, so a rerun on one machine gives the same
weights), saved beside the probe. lora: the critic model, cut to `critic_lora.depth` layers,
fine-tuned with LoRA as a classifier with the same heads (minicc/critic_lora.py); seeded by
`critic_seed`, so a rerun on one machine gives the same weights. judge: nothing to train
(minicc/trained_critic.py says what the directory then holds).
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from minicc.cli import (
    PARAMS_FILE,
    BaseTemplateFile,
    InstructTemplateFile,
    ParamsFile,
    PrinciplesFile,
    stage_errors,
)
from minicc.critic import CriticFiles, critic_setup, open_critic
from minicc.critic_lora import lora_settings
from minicc.critic_lora_training import train_critic_lora
from minicc.critic_metrics import training_headline
from minicc.critic_training import feature_inputs, select_sources, train_probe
from minicc.jsonl import atomic_write_files, json_text
from minicc.labeled import load_labeled, load_requests
from minicc.models import pick_device, pick_dtype, resolve_model
from minicc.params import load_params
from minicc.probe import save_probe
from minicc.request_classifier import DIRECTORY as REQUEST_CLASSIFIER_DIR
from minicc.request_classifier import save_request_classifier, training_precision
from minicc.resume import resumable
from minicc.seeding import seed_everything
from minicc.trained_critic import LORA_DIR, PROBE_FILE, write_trained_critic


def main(
    train: Annotated[Path, typer.Option(help="Labeled (prompt, response) rows (JSONL).")],
    requests: Annotated[Path, typer.Option(help="Labeled requests for the request head (JSONL).")],
    principles: PrinciplesFile,
    instruct_template: InstructTemplateFile,
    base_template: BaseTemplateFile,
    out: Annotated[Path, typer.Option(help="Where to write the trained critic (a directory).")],
    metrics_out: Annotated[Path, typer.Option(help="Headline training and validation metrics.")],
    detail_out: Annotated[Path, typer.Option(help="Every training metric, per source (JSON).")],
    params_file: ParamsFile = PARAMS_FILE,
) -> None:
    with stage_errors("train_critic"):
        params = load_params(params_file)
        method = params.critique.method
        if method == "judge":
            write_trained_critic(out, method, lambda staging: None)
            untrained = json_text({"method": method})
            atomic_write_files({metrics_out: untrained, detail_out: untrained})
            print(f"train_critic: critique.method is judge, nothing to train -> {out}")
            return
        # The judge's setup without a probe: the features are what a probe is trained on.
        files = CriticFiles(principles, instruct_template, base_template, trained=out)
        setup = critic_setup(params, files, "judge")
        rows = select_sources(load_labeled(train), params.critic_probe.sources)
        labeled_requests = load_requests(requests)
        seed_everything(params.critic_seed)
        if method == "lora":
            summary: dict[str, Any] = {"method": method}
            device = pick_device(params.models.device)

            def fill(staging: Path) -> None:
                summary.update(
                    train_critic_lora(
                        resolve_model(params.models.critic, params.models),
                        setup.constitution.version,
                        rows,
                        labeled_requests,
                        lora_settings(params),
                        params.critic_seed,
                        staging / LORA_DIR,
                        pick_dtype(device, params.models.dtype),
                    )
                )

            write_trained_critic(out, method, fill)
            atomic_write_files({metrics_out: json_text(summary), detail_out: json_text(summary)})
            print(
                f"train_critic: {summary['n']} examples, {summary['train_seconds']} s "
                f"(loss {summary['first_loss']} -> {summary['last_loss']}) -> {out}"
            )
            return
        critic = open_critic(params, setup)
        layers = params.critic_probe.feature_layers
        inputs = feature_inputs(critic, rows, layers, critic.embedder.embedder_id)
        with resumable("train_critic", inputs) as log:
            probe, classifier, metrics = train_probe(
                critic,
                rows,
                labeled_requests,
                params.critic_probe,
                batch_size=params.critique.batch_size,
                log=log,
                seed=params.critic_seed,
                precision=training_precision(params.models.dtype),
            )
            metrics = {"method": method, **metrics}

            def fill_probe(staging: Path) -> None:
                save_probe(staging / PROBE_FILE, probe)
                if classifier is not None:
                    save_request_classifier(staging / REQUEST_CLASSIFIER_DIR, classifier)

            write_trained_critic(out, method, fill_probe)
            atomic_write_files(
                {
                    metrics_out: json_text(training_headline(metrics)),
                    detail_out: json_text(metrics),
                }
            )
        cv = metrics["grouped_cv"].get("all", {})
        print(
            f"train_critic: {len(rows)} rows, layer {probe.layer}; grouped CV AUROC "
            f"{cv.get('auroc')}, balanced accuracy {cv.get('balanced_accuracy')} "
            f"({metrics['feature_seconds']} s features, {metrics['fit_seconds']} s fit) -> {out}"
        )


if __name__ == "__main__":
    typer.run(main)
