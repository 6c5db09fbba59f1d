"""Critique -> revision: the supervised step of Constitutional AI (Bai et al. 2022).

Each candidate the critic scored below `revise.threshold` is shown to the reviser after the
few-shot examples of `constitution/revision_examples.yaml`: the request and the reply, a
"Critique request" from one principle (drawn per revision from the seed among the principles
that correct the fault the critic found), the reviser's critique,
then a "Revision request" from the same principle, and the reviser writes the revision (after
the examples file's opening for the fault, if it names one: "I can't help with"). Chat
models see this as alternating chat turns, base models as labelled plain-text paragraphs
(minicc/prompting.py). A round revises the previous round's revision; every round's revision is
kept, so the critic can say whether another round helped.
"""

import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from minicc.constitution import Fault, Principle, RevisionGuide
from minicc.generation import Decoding, Request, complete_requests
from minicc.models import LoadedModel
from minicc.params import ReviseParams
from minicc.prompting import Turn, dialogue_stops, format_dialogue
from minicc.records import Critique, Revision
from minicc.resume import ResumeLog, RunCount
from minicc.seeding import derive_seed

_LEADING_LABEL = re.compile(
    r"^\s*(?:(?:revised|new|improved)\s+)?(?:revision|reply|response|answer|assistant|critique)"
    r"\s*:\s*",
    re.IGNORECASE,
)
_NEXT_PART = re.compile(
    r"\n\s*(?:critique request|revision request|request|critique|revision|reply)\s*:",
    re.IGNORECASE,
)


def clean_output(text: str) -> str:
    """The answer without what a small model adds around it.

    Models imitating the few-shot pattern start with a label ("Revision: ...") and, once done,
    carry on with the pattern's next part ("Critique request: ..." on a new line): the label
    goes and the text stops where the next part starts.
    """
    text = _NEXT_PART.split(text, maxsplit=1)[0]
    while (label := _LEADING_LABEL.match(text)) is not None:
        text = text[label.end() :]
    return text.strip()


def opened(opening: str, text: str) -> str:
    """A turn started with `opening` and continued with the model's stripped `text`.

    Generation strips the completion, so the space between the two is put back before a word
    (after a whole word the model's next token nearly always starts a new one) and not before
    punctuation: "I can't help" and ", sorry." make "I can't help, sorry.".
    """
    if not opening:
        return text
    if not text:
        return opening
    return f"{opening} {text}" if text[0].isalnum() else opening + text


def revision_targets(critiques: list[Critique], threshold: float) -> list[Critique]:
    """Scored critiques below `threshold`, in file order; unscored ones have no score to judge."""
    return [c for c in critiques if c.scored and c.score is not None and c.score < threshold]


def fault_of(critique: Critique) -> Fault:
    """What the critic found wrong with a low-scored reply: harmful help when it judged the reply
    unsafe, otherwise an unhelpful one (a needless refusal, noise, an off-topic or thin answer)."""
    return "harmful" if critique.safe is False else "unhelpful"


def draw_principle(
    principles: list[Principle], seed: int, revision_id: str, fault: Fault
) -> Principle:
    """The principle one revision is made under: drawn, by seed and id only, among those that
    correct `fault` (all of them if none does).

    A uniform draw over every principle gave a harmful request "helpfulness" about one time in
    four, and the small reviser then argued that the request was harmless and kept the harm.
    """
    fitting = [p for p in principles if p.fault in (None, fault)] or principles
    return random.Random(derive_seed(seed, "revise", revision_id)).choice(fitting)


def _critique_request(guide: RevisionGuide, principle: Principle, request: str, reply: str) -> Turn:
    exchange = guide.exchange.substitute(request=request, response=reply)
    return Turn("user", f"{exchange}\n\nCritique request: {principle.critique_request}")


def _revision_request(principle: Principle) -> Turn:
    return Turn("user", f"Revision request: {principle.revision_request}")


def example_turns(guide: RevisionGuide) -> list[Turn]:
    """The few-shot examples as finished dialogues, shown before every task."""
    by_id = {p.id: p for p in guide.principles}
    turns: list[Turn] = []
    for example in guide.examples:
        principle = by_id[example.principle]
        turns += [
            _critique_request(guide, principle, example.request, example.response),
            Turn("assistant", example.critique, "Critique"),
            _revision_request(principle),
            Turn("assistant", example.revision, "Revision"),
        ]
    return turns


@dataclass(frozen=True)
class _Task:
    """One revision to make: of `reply`, the original's text or the last round's revision."""

    revision_id: str
    original: Critique
    reply: str
    principle: Principle
    chain: int
    """Which of the original's `num_revisions` chains this revision continues."""


def _task(
    guide: RevisionGuide, seed: int, original: Critique, reply: str, round_number: int, chain: int
) -> _Task:
    revision_id = f"{original.candidate_id}/rev{round_number}.{chain}"
    principle = draw_principle(guide.principles, seed, revision_id, fault_of(original))
    return _Task(revision_id, original, reply, principle, chain)


@dataclass(frozen=True)
class RevisionRun:
    revisions: list[Revision]
    dropped_empty: int
    """Revisions that were empty once cleaned: dropped, and their chain ends."""
    count: RunCount


class _Reviser:
    """The reviser model answering dialogues in batches, each part's results kept in the log."""

    def __init__(self, loaded: LoadedModel, params: ReviseParams, seed: int, log: ResumeLog):
        self.loaded, self.params, self.seed, self.log = loaded, params, seed, log
        self.count = RunCount(0, 0)

    def answer(
        self,
        dialogues: dict[str, list[Turn]],
        part: str,
        max_new_tokens: int,
        round_number: int,
        openings: dict[str, str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Completions of the next assistant turn (labelled `part` for base models), by key.

        A key in `openings` has its turn started with those words; its text is the opening and
        what the model wrote after it (`num_tokens` counts only the latter).
        """
        openings = openings or {}
        suffix = f"#{part.lower()}"
        requests = [
            Request(key + suffix, format_dialogue(self.loaded, turns, part, openings.get(key, "")))
            for key, turns in dialogues.items()
        ]
        params = self.params
        decoding = Decoding(params.do_sample, params.temperature, params.top_p, max_new_tokens)
        label = f"revise round {round_number}: {part.lower()}s"
        done, count = complete_requests(
            self.loaded,
            requests,
            decoding,
            params.batch_size,
            self.seed,
            self.log,
            label,
            share_prefix=True,  # the few-shot examples, read once instead of once per row
            stop_texts=dialogue_stops(self.loaded),
        )
        self.count = RunCount(
            self.count.batches_run + count.batches_run,
            self.count.batches_resumed + count.batches_resumed,
        )
        return {
            key: {
                **done[key + suffix],
                "text": opened(openings.get(key, ""), done[key + suffix]["text"]),
            }
            for key in dialogues
        }


def revise(
    loaded: LoadedModel,
    guide: RevisionGuide,
    targets: list[Critique],
    params: ReviseParams,
    seed: int,
    log: ResumeLog,
) -> RevisionRun:
    """`num_revisions` chains of `rounds` revisions for every target, through one resume log."""
    reviser = _Reviser(loaded, params, seed, log)
    shown = example_turns(guide)
    tasks = [
        _task(guide, seed, target, target.response, 1, k)
        for target in targets
        for k in range(params.num_revisions)
    ]
    revisions: list[Revision] = []
    dropped = 0
    for round_number in range(1, params.rounds + 1):
        dialogues = {
            t.revision_id: [
                *shown,
                _critique_request(guide, t.principle, t.original.prompt, t.reply),
            ]
            for t in tasks
        }
        critiques = reviser.answer(
            dialogues, "Critique", params.critique_max_new_tokens, round_number
        )
        said = {key: clean_output(result["text"]) for key, result in critiques.items()}
        for t in tasks:
            dialogues[t.revision_id] += [
                Turn("assistant", said[t.revision_id], "Critique"),
                _revision_request(t.principle),
            ]
        openings = {
            t.revision_id: guide.openings[fault]
            for t in tasks
            if (fault := fault_of(t.original)) in guide.openings
        }
        done = reviser.answer(
            dialogues, "Revision", params.revision_max_new_tokens, round_number, openings
        )
        next_tasks = []
        for task in tasks:
            result = done[task.revision_id]
            text = clean_output(result["text"])
            if not text:
                dropped += 1
                continue
            original = task.original
            revisions.append(
                Revision(
                    prompt_id=original.prompt_id,
                    candidate_id=task.revision_id,
                    prompt=original.prompt,
                    category=original.category,
                    response=text,
                    num_tokens=result["num_tokens"],
                    finish_reason=result["finish_reason"],
                    generator=loaded.model_id,
                    original_id=original.candidate_id,
                    principle=task.principle.id,
                    critique=said[task.revision_id],
                    round=round_number,
                )
            )
            next_tasks.append(_task(guide, seed, original, text, round_number + 1, task.chain))
        tasks = next_tasks
    return RevisionRun(revisions, dropped, reviser.count)


def revision_inputs(
    targets: list[Critique], params: ReviseParams, seed: int, model_id: str, guide: RevisionGuide
) -> dict[str, Any]:
    """Everything that changes the revisions; names the resume log."""
    return {
        "targets": [(c.candidate_id, c.prompt, c.response, c.safe) for c in targets],
        "params": asdict(params),
        "seed": seed,
        "model": model_id,
        "principles": [asdict(p) for p in guide.principles],
        "exchange": guide.exchange.template,
        "examples": [asdict(e) for e in guide.examples],
        "openings": guide.openings,
    }
