"""The zero-shot judge's reading: a 1-5 score from the probabilities of the next digit.

The critic model reads the judge prompt, and the probabilities it assigns to the tokens "1".."5"
as its next token give the score's distribution. Nothing is parsed from free text. With one
reading per principle group, `critique.combine` makes one verdict of them; a reading whose
digits hold too little of the probability mass leaves the candidate unscored, with a reason.
"""

from dataclasses import dataclass
from statistics import fmean
from typing import Any

import torch

from minicc.params import CritiqueParams

DIGITS = ("1", "2", "3", "4", "5")


def digit_token_ids(tokenizer: Any) -> list[list[int]]:
    """For each digit 1..5, the single tokens that spell it, with or without a leading space."""
    ids = []
    for digit in DIGITS:
        spellings = set()
        for text in (digit, " " + digit):
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                spellings.add(encoded[0])
        if not spellings:
            raise ValueError(f"the critic's tokenizer has no single token for {digit!r}")
        ids.append(sorted(spellings))
    return ids


@dataclass(frozen=True)
class DigitReading:
    probabilities: list[float]
    """P(1)..P(5) renormalised over the digits."""
    digit_mass: float
    score: float


def read_digits(next_token_logits: torch.Tensor, digit_ids: list[list[int]]) -> list[DigitReading]:
    """Turn a batch of next-token logits into digit distributions and expected scores."""
    probs = torch.softmax(next_token_logits.float(), dim=-1)
    per_digit = torch.stack([probs[:, ids].sum(dim=-1) for ids in digit_ids], dim=-1)
    mass = per_digit.sum(dim=-1)
    normalised = per_digit / mass.clamp_min(1e-12).unsqueeze(-1)
    scores = (normalised * torch.arange(1, 6, dtype=normalised.dtype)).sum(dim=-1)
    return [
        DigitReading([round(p, 6) for p in row], round(m, 6), round(s, 6))
        for row, m, s in zip(normalised.tolist(), mass.tolist(), scores.tolist(), strict=True)
    ]


def combine_readings(readings: list[DigitReading], params: CritiqueParams) -> DigitReading:
    """One reading from the per-principle ones, by the declared `critique.combine` rule."""
    match params.combine:
        case "min":
            return min(readings, key=lambda r: r.score)
        case "mean":
            probabilities = [
                round(fmean(column), 6)
                for column in zip(*(r.probabilities for r in readings), strict=True)
            ]
            return DigitReading(
                probabilities=probabilities,
                digit_mass=min(r.digit_mass for r in readings),
                score=round(fmean(r.score for r in readings), 6),
            )


def judged_fields(
    readings: list[DigitReading], principle_ids: list[str] | None, params: CritiqueParams
) -> dict[str, Any]:
    """The critique fields one candidate's readings give (one reading per principle group).

    `principle_ids` names the groups when each holds one principle (`critique.per_principle`):
    their scores are reported too, None where that reading's digit mass is too small.
    """
    fields: dict[str, Any] = {}
    if principle_ids is not None:
        fields["principle_scores"] = {
            principle: (r.score if r.digit_mass >= params.min_digit_mass else None)
            for principle, r in zip(principle_ids, readings, strict=True)
        }
    weakest = min(readings, key=lambda r: r.digit_mass)
    if weakest.digit_mass < params.min_digit_mass:
        fields["unscored_reason"] = (
            f"digit probability mass {weakest.digit_mass:.3f} is below "
            f"critique.min_digit_mass {params.min_digit_mass}"
        )
        return fields
    chosen = combine_readings(readings, params)
    return fields | {
        "scored": True,
        "probabilities": chosen.probabilities,
        "digit_mass": weakest.digit_mass,
        "score": chosen.score,
        "safe": chosen.score >= params.safe_threshold,
    }
