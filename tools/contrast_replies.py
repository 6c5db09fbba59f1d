"""Replies to the authored contrast requests, labeled by the request's author: training rows for
the critic's harm head.

Why: every harmful reply of XSTest (short, direct compliance with a plainly harmful question)
is an eval row, so the harm head trained on GPTFuzz role-play and JailbreakBench answers never
saw that kind of harm, and saw answers to risky-sounding harmless questions only from XSTest's
safe prompts. It missed the one and flagged the other. The contrast pairs
(data/critic/contrast_pairs.jsonl) give the missing contrast: one wording, harmless and
harmful. The bundled SmolLM2-135M-Instruct, which complies with most harmful requests, answers
both twins; a reply that is neither a refusal nor degenerate (minicc/refusal.py,
minicc/degeneration.py) is compliance, and compliance gives harmful help exactly when the request
is harmful, which is how XSTest's annotators label (`full_compliance` to an unsafe prompt).

Two steps, because the first needs the model and the second must be reproducible anywhere:

    .venv/bin/python tools/contrast_replies.py    # writes data/critic/contrast_replies.jsonl

generates the replies once (greedy; the committed file came from an AMD EPYC in bfloat16, another
CPU type may word a few replies differently); a rerun keeps the replies already in the file and
answers only the pairs that lack one (a new round, a reworded pair), since a batch's neighbours
can change bfloat16 greedy replies (`--all` answers every pair again). Then
tools/build_critic_sets.py turns the committed replies into training rows with `reply_rows`, a
pure function tested in tests/test_contrast_replies.py.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from contrast_requests import ContrastPair, ContrastType, load_contrast_pairs

from minicc.degeneration import is_degenerate
from minicc.errors import UserError
from minicc.jsonl import read_numbered_records, write_records
from minicc.labeled import LabeledResponse
from minicc.records import check_identified_rows
from minicc.refusal import is_refusal

REPLIES = Path("data/critic/contrast_replies.jsonl")
CONTRAST_PAIRS = Path("data/critic/contrast_pairs.jsonl")
MODEL = "smollm2-135m-instruct"
MAX_NEW_TOKENS = 96
SOURCE = "contrast-smollm2"
EXCLUDED_TYPES: frozenset[ContrastType] = frozenset({"discrimination"})
"""Pairs whose harmful twin asks for a prejudiced argument ("Why should women not be given
jobs?"): the bundled model's answers to those mostly argue against the premise or drift, which
is not harmful help, so "not a refusal" would mislabel them."""


@dataclass(frozen=True)
class ContrastReply:
    """One line of contrast_replies.jsonl: the model's reply to one twin of a pair."""

    id: str
    """`<pair id>:<side>`, e.g. `homonym-01:harmful`."""
    request: str
    response: str
    model: str
    """The answering model as minicc.models names it (alias and weights hash)."""
    finish_reason: str


def load_replies(path: Path) -> list[ContrastReply]:
    numbered = read_numbered_records(path, ContrastReply)
    return check_identified_rows(path, numbered, ("id", "request", "model"), "contrast replies")


def reply_rows(
    pairs: list[ContrastPair], replies: list[ContrastReply], path: Path = REPLIES
) -> list[LabeledResponse]:
    """Training rows from the replies, in the pairs' order: every reply to a pair of a kept type
    that is neither empty, a refusal nor degenerate, labeled harmful help when its request is
    the harmful twin. A pair without both replies, a reply to no pair or one whose request is
    not its pair's current wording is an error naming `path` (where the replies were read): the
    pairs changed since the replies were made, and the replies must be generated again."""
    by_id = {reply.id: reply for reply in replies}
    expected = {f"{pair.id}:{side}" for pair in pairs for side, _ in pair.twins()}
    stray = sorted(set(by_id) - expected)
    if stray:
        raise UserError(
            f"{path}: reply {stray[0]!r} answers no contrast pair; regenerate the replies "
            "(tools/contrast_replies.py)"
        )
    rows = []
    for pair in pairs:
        for side, request in pair.twins():
            key = f"{pair.id}:{side}"
            reply = by_id.get(key)
            if reply is None or reply.request != request:
                raise UserError(
                    f"{path}: no reply to the current wording of {key} ({request!r}); "
                    "regenerate the replies (tools/contrast_replies.py)"
                )
            response = reply.response.strip()
            if pair.type in EXCLUDED_TYPES or not response:
                continue
            if is_refusal(response) or is_degenerate(response, request=request):
                continue
            harmful = side == "harmful"
            rows.append(
                LabeledResponse(
                    id=f"{SOURCE}-{pair.id}-{side}",
                    prompt=request,
                    response=response,
                    harmful=harmful,
                    source=SOURCE,
                    group=f"contrast:{pair.id}",
                    prompt_label="unsafe" if harmful else "safe",
                    response_kind="full_compliance",
                    label_source="authored",
                    construction=None,
                    pair_of=None,
                )
            )
    return rows


def generate_replies(pairs: list[ContrastPair], batch_size: int) -> list[ContrastReply]:
    """The bundled model's greedy reply to both twins of every pair (params.yaml's device and
    precision), through the pipeline's own generation code."""
    from minicc.generation import AnswerPlan, Decoding, answer_inputs, answer_prompts
    from minicc.models import load_model
    from minicc.params import load_params
    from minicc.records import Prompt
    from minicc.resume import resumable

    params = load_params(Path("params.yaml"))
    prompts = [
        Prompt(
            id=f"{pair.id}:{side}",
            prompt=request,
            category="adversarial" if side == "harmful" else "borderline",
            source=f"contrast:{pair.id}",
        )
        for pair in pairs
        for side, request in pair.twins()
    ]
    loaded = load_model(MODEL, params.models)
    greedy = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    plan = AnswerPlan(1, greedy, batch_size, "contrast replies")
    with resumable("contrast-replies", answer_inputs(prompts, plan, 0, loaded.model_id)) as log:
        answers, _ = answer_prompts(loaded, prompts, plan, 0, log)
    return [
        ContrastReply(a.prompt_id, a.prompt, a.response, a.generator, a.finish_reason)
        for a in answers
    ]


def unanswered(pairs: list[ContrastPair], replies: list[ContrastReply]) -> list[ContrastPair]:
    """The pairs that lack a reply to one of their twins' current wording: the ones a new round
    of pairs (or a reworded pair) adds."""
    answered = {(reply.id, reply.request) for reply in replies}
    return [
        pair
        for pair in pairs
        if any((f"{pair.id}:{side}", request) not in answered for side, request in pair.twins())
    ]


def merged_replies(
    pairs: list[ContrastPair], kept: list[ContrastReply], new: list[ContrastReply]
) -> list[ContrastReply]:
    """One reply per twin of `pairs`, in the pairs' order: the new reply where there is one,
    else the kept one to the same wording; replies to removed pairs or old wordings are
    dropped."""
    by_key = {(reply.id, reply.request): reply for reply in kept}
    by_key.update({(reply.id, reply.request): reply for reply in new})
    return [
        by_key[key]
        for pair in pairs
        for side, request in pair.twins()
        if (key := (f"{pair.id}:{side}", request)) in by_key
    ]


def main(
    pairs_file: Annotated[Path, typer.Option("--pairs", help="The contrast pairs.")] = (
        CONTRAST_PAIRS
    ),
    out: Annotated[Path, typer.Option(help="Where to write the replies (JSONL).")] = REPLIES,
    batch_size: Annotated[int, typer.Option(help="Requests per generation batch.")] = 32,
    regenerate: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Answer every pair again. Without it, the replies already in --out to a pair's "
            "current wording are kept and only the other pairs are answered (a batch's "
            "neighbours can change bfloat16 greedy replies, so regenerating may reword old ones).",
        ),
    ] = False,
) -> None:
    try:
        pairs = load_contrast_pairs(pairs_file)
        kept = [] if regenerate or not out.exists() else load_replies(out)
        todo = unanswered(pairs, kept)
        replies = merged_replies(pairs, kept, generate_replies(todo, batch_size) if todo else [])
        write_records(out, replies)
        rows = reply_rows(pairs, replies, out)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    harmful = sum(row.harmful for row in rows)
    print(
        f"{len(replies)} replies ({2 * len(todo)} new) -> {out}; {len(rows)} become training "
        f"rows ({harmful} harmful help, {len(rows) - harmful} harmless answers)"
    )


if __name__ == "__main__":
    typer.run(main)
