"""The critic that judges compare: by default the one that selected the training data.

A model fine-tuned on what one critic preferred is judged kindly by that critic, so
`evaluate.critic` can name another:

- `same` (default): the critique stage's critic (`critique.method` on `models.critic`, with the
  probe file compare is given), as before this setting existed.
- a path ending in `.json`: a probe file trained by train_critic on `models.critic` (other
  sources, layer or heads than the selecting one), with its `request_classifier/` directory
  beside it when it was trained with one.
- a trained-critic directory (train_critic's output, `critic.json` inside) of any method, e.g.
  a LoRA critic kept aside while the selecting critic is the probe: read as the critique stage
  reads one, with the method its marker names, on `models.critic`.
- anything else: a model spec (bundled alias, model directory or Hugging Face id) read as a
  zero-shot judge with the `critique` settings and the `critique.style` template.

The id of the critic that judged (with the probe's hash for a probe) goes into every paired
result and into `metrics/eval.json`.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from minicc.critic import (
    Critic,
    CriticFiles,
    CriticSetup,
    critic_setup,
    open_critic,
    probe_setup,
    setup_critic,
)
from minicc.errors import UserError
from minicc.models import load_model
from minicc.params import Params
from minicc.trained_critic import is_trained_critic, recorded_method

SAME = "same"


@dataclass(frozen=True)
class EvalCritic:
    """The judging critic's setup, checked before its (slow) model loads."""

    model: str
    """The model spec it reads with."""
    setup: CriticSetup
    opens_as_critique: bool
    """Opened as the critique stage opens its critic (`same`, or a trained-critic directory)."""


def eval_critic_setup(params: Params, files: CriticFiles) -> EvalCritic:
    """`evaluate.critic` resolved (module docstring); a missing probe file fails here."""
    setting = params.evaluate.critic
    if setting == SAME:
        setup = critic_setup(params, files, params.critique.method)
        return EvalCritic(params.models.critic, setup, opens_as_critique=True)
    if is_trained_critic(Path(setting)):
        directory = Path(setting)
        setup = critic_setup(params, replace(files, trained=directory), recorded_method(directory))
        return EvalCritic(params.models.critic, setup, opens_as_critique=True)
    judge = critic_setup(params, files, "judge")
    if not setting.endswith(".json"):
        return EvalCritic(setting, judge, opens_as_critique=False)
    probe = Path(setting)
    if not probe.is_file():
        raise UserError(
            f"evaluate.critic: probe file {probe} not found; name a probe trained by "
            "train_critic, a model spec for a zero-shot judge, or `same`"
        )
    return EvalCritic(
        params.models.critic, probe_setup(judge.constitution, probe), opens_as_critique=False
    )


def open_eval_critic(params: Params, chosen: EvalCritic) -> Critic:
    """The judging critic, model loaded (a probe refuses a model it was not trained on)."""
    if chosen.opens_as_critique:
        return open_critic(params, chosen.setup)
    loaded = load_model(chosen.model, params.models)
    return setup_critic(loaded, params.critique, chosen.setup)
