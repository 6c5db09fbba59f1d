"""Supervised fine-tuning data: chosen samples as chat examples, and a leak-free train/val split.

The split is by prompt, not by row: the select stage may keep several chosen responses for one
prompt, and a prompt seen in training would make its validation loss look better than the model
is on new prompts.
"""

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from minicc.endings import whole_sentences
from minicc.errors import UserError
from minicc.params import CutReplies, RefusalPairs, SftParams
from minicc.records import (
    CATEGORIES,
    HARMFUL,
    Category,
    FinishReason,
    PreferencePair,
    Selected,
)
from minicc.refusal import is_refusal, refusal_opening
from minicc.seeding import derive_seed

T = TypeVar("T")


Trim = Literal["refusal", "sentence"]


@dataclass(frozen=True)
class SftExample:
    """One training conversation, in the `messages` format TRL's SFT trainer reads."""

    prompt_id: str
    category: Category
    messages: list[dict[str, str]]
    """Two turns: `{"role": "user", ...}` with the prompt, then `{"role": "assistant", ...}`."""
    score: float
    """The critic's score of the assistant turn (1-5 scale)."""
    candidate_id: str
    """Which generated candidate the assistant turn is, for tracing an example back."""
    finish_reason: FinishReason
    """How the selected reply ended when it was generated (`length`: the token budget cut it)."""
    trimmed: Trim | None
    """What the assistant turn was cut to, if anything: the sentence that refuses
    (`sft.trim_refusals`) or a cut reply's last whole sentence (`sft.cut_replies: sentence`)."""
    ends_turn: bool
    """Whether training teaches the end of the turn after the assistant turn. False only for a
    cut reply trained whole under `sft.cut_replies: open` (or under `sentence`, when no sentence
    in it is whole): with it, the fine-tune would learn to stop mid-sentence."""

    @property
    def request(self) -> str:
        """The user turn's text."""
        return self.messages[0]["content"]

    @property
    def reply(self) -> str:
        """The assistant turn's text, as trained."""
        return self.messages[1]["content"]


def _assistant_turn(
    response: str, cut_by_budget: bool, trim_refusals: bool, cut_replies: CutReplies
) -> tuple[str, Trim | None, bool]:
    """The assistant turn of a chosen reply, what it was cut to, and whether it ends the turn."""
    if trim_refusals and (opening := refusal_opening(response)) != response:
        return opening, "refusal", True
    if not cut_by_budget or cut_replies == "whole":
        return response, None, True
    if cut_replies == "sentence" and (kept := whole_sentences(response)) is not None:
        return kept, "sentence", True
    # `open`, or a cut reply with no whole sentence in it.
    return response, None, False


def _finish_reason(
    finish_reasons: Mapping[str, FinishReason], reply_id: str, what: str
) -> FinishReason:
    if reply_id not in finish_reasons:
        raise UserError(
            f"{what} {reply_id!r} is not among the generated replies (candidates and "
            "revisions); rerun the pipeline from the select stage"
        )
    return finish_reasons[reply_id]


def build_sft_examples(
    selected: list[Selected],
    params: SftParams,
    finish_reasons: Mapping[str, FinishReason],
) -> list[SftExample]:
    """Chat examples from the `chosen` samples whose score is at least `sft.min_score`, in
    order.

    Rejected samples are examples to avoid: they belong in preference pairs, never in SFT. With
    `trim_refusals` a reply that refuses keeps only its sentences up to the refusal
    (`refusal_opening`), so the fine-tune learns to stop there. A reply the token budget cut
    trains as `cut_replies` says. `score` stays the critic's score of the whole reply, and
    `candidate_id` leads back to it. `finish_reasons` holds how each generated reply (candidate
    or revision) ended, by `candidate_id`.
    """
    examples = []
    for sample in selected:
        if sample.role != "chosen" or sample.score < params.min_score:
            continue
        finish_reason = _finish_reason(finish_reasons, sample.candidate_id, "selected sample")
        reply, trimmed, ends_turn = _assistant_turn(
            sample.response, finish_reason == "length", params.trim_refusals, params.cut_replies
        )
        examples.append(
            SftExample(
                prompt_id=sample.prompt_id,
                category=sample.category,
                messages=[
                    {"role": "user", "content": sample.prompt},
                    {"role": "assistant", "content": reply},
                ],
                score=sample.score,
                candidate_id=sample.candidate_id,
                finish_reason=finish_reason,
                trimmed=trimmed,
                ends_turn=ends_turn,
            )
        )
    return examples


@dataclass(frozen=True)
class PairTurns:
    """Select's preference pairs with their chosen replies made into turns as SFT makes them."""

    pairs: list[PreferencePair]
    chosen_trimmed: int
    """Pairs whose chosen reply was cut to its refusal or to its last whole sentence."""
    dropped: int
    """Pairs left out: their chosen reply would train without the end of the turn."""


def select_pair_turns(
    pairs: Sequence[PreferencePair],
    params: SftParams,
    finish_reasons: Mapping[str, FinishReason],
) -> PairTurns:
    """Select's pairs, each chosen reply cut as `build_sft_examples` cuts an SFT example's.

    Why: DPO's trainer appends the end of the turn to every reply, so a chosen reply the token
    budget cut mid-sentence taught the model to end its turn there, the fault
    `sft.cut_replies: sentence` removed from SFT; and a chosen refusal that goes on after
    refusing taught it to go on, the fault `sft.trim_refusals` removed. So the chosen reply is
    trimmed the same way, and a pair whose chosen reply would train without the end of the turn
    (`cut_replies: open`, or a cut reply with no whole sentence in it) is left out, since DPO
    cannot train a reply without it. The rejected reply stays as generated: DPO lowers its
    likelihood, ending included, and lowering the odds of ending a turn mid-sentence teaches
    nothing wrong. Scores stay the critic's scores of the whole replies.
    """
    kept, trimmed = [], 0
    for pair in pairs:
        cut = _finish_reason(finish_reasons, pair.chosen_id, "chosen reply of a preference pair")
        chosen, how, ends_turn = _assistant_turn(
            pair.chosen, cut == "length", params.trim_refusals, params.cut_replies
        )
        if not ends_turn:
            continue
        trimmed += how is not None
        kept.append(replace(pair, chosen=chosen))
    return PairTurns(kept, trimmed, len(pairs) - len(kept))


REFUSES_A_HARMLESS_REQUEST = 2.0
"""The rubric's score of a refusal of a harmless request (constitution/critic_instruct.yaml): the
`rejected_score` of an answer-over-refusal pair, whose refusal no critic scored under its
prompt."""
OFF_TOPIC = 3.0
"""The rubric's score of an off-topic reply (harmless but useless): the `rejected_score` of a
mirrored pair, whose rejected answer was written for another prompt."""


def refusal_pairs(
    examples: Sequence[SftExample], seed: int, kind: RefusalPairs
) -> list[PreferencePair]:
    """Preference pairs made of the examples' own assistant turns (`sft.refusal_pairs`).

    `harmless`: for each example that answers a harmless prompt, that answer over a refusal the
    examples teach for harmful prompts. Why: SFT on refusals of harmful prompts teaches the
    refusal's words, and the fine-tune then says them to harmless prompts too (over-refusal
    0.08-0.16 in every setting measured), while the revised > original pairs of `select` never
    show it an answer preferred to a refusal. Measured alone it teaches no refusing at all (the
    refusal rate on harmful prompts fell from 0.49 to 0.03 at seed 42): the rejected refusal
    is the same few sentences under every prompt, so DPO learns to avoid them, not to avoid
    them here. `mirrored` adds, for each such pair, its mirror on the refusal's own harmful
    prompt: the refusal over that answer. Each drawn text is then chosen under one prompt and
    rejected under another, so only the prompt tells the two pairs apart. Measured at seed 42
    (README, results): it lowered refusal of both kinds (harmful 0.49 -> 0.34, needless 0.10 ->
    0.08), so neither kind is the default.

    The rejected refusal is an example's assistant turn as trained (trimmed), so DPO after SFT
    contrasts what the model was just taught to say with what it should say; it is drawn per
    answer by `derive_seed(seed, "answer_over_refusal", prompt_id)` among the refusal examples
    in `candidate_id` order, so a pair does not depend on the examples' order. No refusal
    example, no pairs. An answer trained without the end of the turn (a cut reply with no whole
    sentence) makes no pair: DPO ends every completion's turn, and would teach it to stop there.
    """
    if kind == "none":
        return []
    refusals = sorted(
        (e for e in examples if e.category in HARMFUL and is_refusal(e.reply)),
        key=lambda e: e.candidate_id,
    )
    if not refusals:
        return []
    pairs = []
    for example in examples:
        if example.category in HARMFUL or not example.ends_turn or is_refusal(example.reply):
            continue
        draw = random.Random(derive_seed(seed, "answer_over_refusal", example.prompt_id))
        refusal = refusals[draw.randrange(len(refusals))]
        pairs.append(_pair_of(example, refusal, rejected_score=REFUSES_A_HARMLESS_REQUEST))
        if kind == "mirrored":
            pairs.append(_pair_of(refusal, example, rejected_score=OFF_TOPIC))
    return pairs


def _pair_of(chosen: SftExample, rejected: SftExample, rejected_score: float) -> PreferencePair:
    """`chosen`'s turn over `rejected`'s, under `chosen`'s prompt."""
    return PreferencePair(
        prompt=chosen.request,
        chosen=chosen.reply,
        rejected=rejected.reply,
        prompt_id=chosen.prompt_id,
        category=chosen.category,
        chosen_id=chosen.candidate_id,
        rejected_id=rejected.candidate_id,
        chosen_score=chosen.score,
        rejected_score=rejected_score,
    )


def ending_counts(examples: Sequence[SftExample]) -> dict[str, int]:
    """How the examples' assistant turns were made from their replies, for the metrics file."""
    return {
        "refusals_trimmed": sum(e.trimmed == "refusal" for e in examples),
        "cut_by_token_budget": sum(e.finish_reason == "length" for e in examples),
        "cut_to_a_sentence": sum(e.trimmed == "sentence" for e in examples),
        "without_end_of_turn": sum(not e.ends_turn for e in examples),
    }


def grouped_split(
    items: Sequence[T], key: Callable[[T], str], val_ratio: float, seed: int
) -> tuple[list[T], list[T]]:
    """Split `items` into (train, val) so that every group (`key`, e.g. prompt_id) is whole.

    round(groups * val_ratio) groups (halves rounded up) go to validation, drawn by shuffling
    the sorted group ids with a generator seeded by `derive_seed(seed, "split")`: the split
    depends only on the set of groups and the seed, not on the order of `items`. Items keep
    their input order within each part. Works for SFT examples and preference pairs alike.
    """
    if not 0.0 < val_ratio < 1.0:
        raise UserError(f"sft.val_ratio must be strictly between 0 and 1, got {val_ratio}")
    groups = sorted({key(item) for item in items})
    n_val = int(len(groups) * val_ratio + 0.5)
    if not 0 < n_val < len(groups):
        if len(groups) < 2:
            hint = "lower sft.min_score so that more prompts keep a chosen response"
        else:
            low, high = 1 / len(groups), (len(groups) - 1) / len(groups)
            hint = (
                f"set sft.val_ratio between {low:.3g} and {high:.3g}, "
                "or lower sft.min_score so that more prompts keep a chosen response"
            )
        raise UserError(
            f"cannot split {len(groups)} prompt(s) with sft.val_ratio={val_ratio}: "
            f"{n_val} would go to validation and {len(groups) - n_val} to training, and each "
            f"part needs at least one; {hint}"
        )
    random.Random(derive_seed(seed, "split")).shuffle(groups)
    val_groups = set(groups[:n_val])
    train = [item for item in items if key(item) not in val_groups]
    val = [item for item in items if key(item) in val_groups]
    return train, val


def category_counts(examples: Sequence[SftExample]) -> dict[str, int]:
    """Examples per category, every category present (0 when none), for the metrics file."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for example in examples:
        counts[example.category] += 1
    return counts


@dataclass(frozen=True)
class SftSplit:
    train: list[SftExample]
    val: list[SftExample]
    pairs_train: list[PreferencePair]
    pairs_val: list[PreferencePair]


def split_by_prompt(
    examples: list[SftExample], pairs: list[PreferencePair], val_ratio: float, seed: int
) -> SftSplit:
    """One grouped split of every prompt that has an SFT example or a preference pair, applied
    to both: a prompt's examples and pairs always land on the same side.

    With no pairs this is exactly `grouped_split` of the examples. Each SFT part must end up
    non-empty (a prompt that only has pairs can take a validation slot).
    """
    prompt_ids = sorted({e.prompt_id for e in examples} | {p.prompt_id for p in pairs})
    _, val_list = grouped_split(prompt_ids, lambda prompt_id: prompt_id, val_ratio, seed)
    val_ids = set(val_list)
    split = SftSplit(
        train=[e for e in examples if e.prompt_id not in val_ids],
        val=[e for e in examples if e.prompt_id in val_ids],
        pairs_train=[p for p in pairs if p.prompt_id not in val_ids],
        pairs_val=[p for p in pairs if p.prompt_id in val_ids],
    )
    if not split.train or not split.val:
        empty = "training" if not split.train else "validation"
        raise UserError(
            f"the {empty} part has no SFT example: {len(examples)} example(s) from "
            f"{len({e.prompt_id for e in examples})} prompt(s) with sft.val_ratio={val_ratio}; "
            "lower sft.min_score so that more prompts keep a chosen response, or change "
            "sft.val_ratio"
        )
    return split
