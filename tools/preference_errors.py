"""Which eval rows the critic orders wrongly: every pair of `metrics/critic.json`'s `preference`
section that the better reply does not win, grouped by that reply.

Why: the pair accuracies count answers once per kind of useless reply, so one misread answer
costs every answer-over-useless pair at once; the README's "what it still gets wrong" needs the
answers themselves, with their score and P(harmful help), to say why they lose. Earlier sessions
rewrote this as a throwaway script each time.

    .venv/bin/python tools/preference_errors.py    # after `dvc repro critic_eval`

reads the labeled eval rows and critic_eval's scored rows, pairs them as critic_eval does
(`minicc.critic_metrics.preference_pairs`) and prints one line per losing reply: its score,
P(harmful help), request, and each pair it loses with the margin (worse score minus its own).
A pair that does not earn critic_eval's full credit (`pair_credit`: a tie earns one half) is
listed as lost.
"""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from minicc.critic_metrics import ScoredRow, pair_credit, preference_pairs
from minicc.errors import UserError
from minicc.jsonl import atomic_write_text, json_text, read_records
from minicc.labeled import LabeledResponse, load_labeled


@dataclass(frozen=True)
class LostPair:
    kind: str
    worse_id: str
    margin: float
    """The worse reply's score minus the better one's: 0 or more, since the pair is lost."""


@dataclass(frozen=True)
class LosingReply:
    id: str
    prompt: str
    score: float
    p_harmful: float | None
    lost: list[LostPair]


def losing_replies(rows: list[LabeledResponse], scored: list[ScoredRow]) -> list[LosingReply]:
    """The better side of every lost pair, most pairs lost first, then by id; a pair with an
    unscored side is lost (as critic_eval counts it) with margin 0."""
    by_id = {row.id: row for row in rows}
    result = {row.id: row for row in scored}
    missing = sorted(set(by_id) - set(result))
    if missing:
        raise UserError(
            f"{len(missing)} labeled rows have no scored row (first {missing[0]!r}); rerun "
            "`dvc repro critic_eval` on these labeled rows"
        )
    lost: dict[str, list[LostPair]] = {}
    for kind, pairs in preference_pairs(rows).items():
        for better, worse in pairs:
            a, b = result[better].score, result[worse].score
            if pair_credit(a, b) < 1.0:
                margin = 0.0 if a is None or b is None else round(b - a, 3)
                lost.setdefault(better, []).append(LostPair(kind, worse, margin))
    return sorted(
        (
            LosingReply(
                id=better,
                prompt=by_id[better].prompt,
                score=round(result[better].score or 0.0, 3),
                p_harmful=result[better].p_harmful,
                lost=pairs,
            )
            for better, pairs in lost.items()
        ),
        key=lambda reply: (-len(reply.lost), reply.id),
    )


def describe(reply: LosingReply) -> str:
    harm = "-" if reply.p_harmful is None else f"{reply.p_harmful:.2f}"
    pairs = ", ".join(f"{p.kind} (+{p.margin:.3f})" for p in reply.lost)
    return f"{reply.score:.2f} h={harm} {reply.prompt[:70]!r}: loses {pairs}"


def main(
    labeled: Annotated[Path, typer.Option(help="critic_eval's labeled rows.")] = Path(
        "data/critic/eval.jsonl"
    ),
    scored: Annotated[Path, typer.Option(help="critic_eval's scored rows.")] = Path(
        "data/critic_eval/scored.jsonl"
    ),
    out: Annotated[Path | None, typer.Option(help="Also write the list as JSON here.")] = None,
) -> None:
    try:
        replies = losing_replies(load_labeled(labeled), read_records(scored, ScoredRow))
    except UserError as error:
        raise SystemExit(f"preference_errors: {error}") from None
    for reply in replies:
        print(describe(reply))
    print(f"{len(replies)} replies lose at least one pair")
    if out is not None:
        atomic_write_text(out, json_text([asdict(reply) for reply in replies]))


if __name__ == "__main__":
    typer.run(main)
