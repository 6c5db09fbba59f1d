"""The critic that judges compare: by default the one that selected the training data.

A model fine-tuned on what one critic preferred is judged kindly by that critic, so
`evaluate.critic` can name another:

- `same` (default): the critique stage's critic (`critique.method` on `models.critic`, with the
  probe file compare is given), as before this setting existed.
- a path ending in `.json`: a probe file trained by train_critic on `models.critic` (other
  sources, layer or heads than the selecting one).
- anything else: a model spec (bundled alias, model directory or Hugging Face id) read as a
  zero-shot judge with the `critique` settings and the `critique.style` template.

The id of the critic that judged (with the probe's hash for a probe) goes into every paired
result and into `metrics/eval.json`.
"""

from dataclasses import dataclass
from pathlib import Path

from minicc.critic import Critic, CriticFiles, CriticSetup, critic_setup, open_critic
from minicc.errors import UserError
from minicc.models import load_model
from minicc.params import Params
from minicc.probe import load_probe

SAME = "same"


@dataclass(frozen=True)
class EvalCritic:
    """The judging critic's setup, checked before its (slow) model loads."""

    model: str
    """The model spec it reads with."""
    setup: CriticSetup


def eval_critic_setup(params: Params, files: CriticFiles) -> EvalCritic:
    """`evaluate.critic` resolved (module docstring); a missing probe file fails here."""
    setting = params.evaluate.critic
    if setting == SAME:
        return EvalCritic(params.models.critic, critic_setup(params, files, params.critique.method))
    judge = critic_setup(params, files, "judge")
    if not setting.endswith(".json"):
        return EvalCritic(setting, judge)
    probe = Path(setting)
    if not probe.is_file():
        raise UserError(
            f"evaluate.critic: probe file {probe} not found; name a probe trained by "
            "train_critic, a model spec for a zero-shot judge, or `same`"
        )
    return EvalCritic(params.models.critic, CriticSetup(judge.constitution, load_probe(probe)))


def open_eval_critic(params: Params, chosen: EvalCritic) -> Critic:
    """The judging critic, model loaded (a probe refuses a model it was not trained on)."""
    if params.evaluate.critic == SAME:
        return open_critic(params, chosen.setup)
    loaded = load_model(chosen.model, params.models)
    return Critic(loaded, chosen.setup.constitution, params.critique, chosen.setup.probe)
