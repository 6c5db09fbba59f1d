"""The critic: scores a response 1-5 against the constitution, from the critic model's reading.

Each candidate is rendered into the judge prompt (the constitution's template, the request
neutralised, the reply cleaned and capped). The score then comes either from the zero-shot judge's
next-digit probabilities (minicc/judge.py), from a trained probe's heads over the critic's features
(minicc/critic_features.py), or from the fine-tuned critic's heads (minicc/critic_lora.py).
Whichever it is, a degenerate reply (empty, noise, a loop, an echo of the request) or a fragment of
a few words scores 3 at most, the rubric's point for useless replies (minicc/rubric.py). A response
that cannot be scored stays unscored, with a reason.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minicc.arrays import FloatArray
from minicc.batching import length_sorted_batches
from minicc.constitution import Constitution, Principle, load_constitution
from minicc.critic_features import FeatureReader
from minicc.critic_lora import LoraCritic, check_manifest, load_critic_lora
from minicc.embedding import Embedder, embedder_id
from minicc.errors import UserError
from minicc.generation import Decoding, Request, complete
from minicc.judge import DigitReading, digit_token_ids, judged_fields, read_digits
from minicc.models import LoadedModel, load_model, resolve_model
from minicc.neutralise import neutralise
from minicc.params import CriticMethod, CriticProbeParams, CritiqueParams, Params
from minicc.prefix_cache import PrefixCache
from minicc.probe import Features, Probe, load_probe, scores_of
from minicc.records import Candidate, Critique
from minicc.relatedness import cosines
from minicc.request_classifier import DIRECTORY as REQUEST_CLASSIFIER_DIR
from minicc.request_classifier import RequestClassifier, load_request_classifier
from minicc.resume import ResumeLog, RunCount, resumable, run_resumable
from minicc.rubric import cap_useless, useless_rows
from minicc.trained_critic import trained_path

HARMFUL_PROBABILITY = 0.5
"""A probe-scored reply is unsafe when its P(harmful help) reaches this."""
_SENTINEL = "\x00MINICC-REQUEST\x00"
_CONTEXT_FIX = (
    "lower critique.max_response_tokens, shorten the prompt or use a critic with a longer context"
)


def _format_principles(principles: list[Principle]) -> str:
    return "\n".join(f"- {p.principle} Ask: {p.question}" for p in principles)


class Critic:
    """Scores candidates against a constitution with one loaded critic model."""

    def __init__(
        self,
        loaded: LoadedModel,
        constitution: Constitution,
        params: CritiqueParams,
        probe: Probe | None = None,
        lora: LoraCritic | None = None,
        request_classifier: RequestClassifier | None = None,
    ):
        if probe is not None:
            wanted = probe.request_classifier
            given = None if request_classifier is None else request_classifier.digest
            if wanted != given:
                raise UserError(
                    f"the critic probe was trained with request classifier {wanted!r}, but "
                    f"{given!r} was loaded; retrain it with `dvc repro train_critic`"
                )
            probe.check_matches(
                loaded.model_id,
                embedder_id(),
                constitution.version,
                params.style,
                params.max_response_tokens,
            )
        if params.style == "instruct" and not loaded.uses_chat_template:
            raise UserError(
                f"critique.style is 'instruct' but the critic {loaded.model_id!r} has no chat "
                "template; set critique.style to 'base' for a non-instruct model"
            )
        self.loaded = loaded
        self.constitution = constitution
        self.params = params
        self.probe = probe
        self.lora = lora
        """Scores come from the probe or the fine-tuned critic when one is given, else from the
        judge's digits."""
        self.request_classifier = request_classifier
        """The probe's fine-tuned request classifier, exactly when the probe names one."""
        self.critic_id = loaded.model_id
        """Resolved critic id recorded in each critique; names the trained critic's hash."""
        if self.probe is not None:
            self.critic_id += f"+probe-{self.probe.digest}"
        if self.lora is not None:
            self.critic_id += f"+lora-{self.lora.digest}"
        self.digit_ids = digit_token_ids(loaded.tokenizer)
        self.special_tokens = list(loaded.tokenizer.all_special_tokens)
        self.principle_groups = (
            [[p] for p in constitution.principles]
            if params.per_principle
            else [constitution.principles]
        )
        self.prefixes = PrefixCache(loaded, _CONTEXT_FIX)
        self.feature_reader = FeatureReader(
            loaded, self.prefixes, self.special_tokens, params.batch_size
        )

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder of the probe's features, loaded on first use."""
        return self.feature_reader.embedder

    def _clean_response(self, response: str) -> str:
        text = neutralise(response, self.special_tokens)
        tokens = self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(tokens) > self.params.max_response_tokens:
            text = self.loaded.tokenizer.decode(tokens[: self.params.max_response_tokens]) + " ..."
        return text

    def reading_length(self, prompt: str, response: str) -> int:
        """Tokens of a row's own part of the judge input but the template's fixed lines: the
        request and the reply as cut for scoring. Batches sorted by it carry the least padding
        (sorted by the reply's characters instead, a training set of the critic padded to 1.16
        times its tokens, since requests differ and long replies are cut)."""
        tokenizer = self.loaded.tokenizer
        texts = (prompt, self._clean_response(response))
        return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)

    def judge_input(self, prompt: str, response: str, principles: list[Principle]) -> str:
        """The full critic input, ending where the digit must come next."""
        prefix, suffix = self.judge_parts(prompt, response, principles)
        return prefix + suffix

    def judge_parts(
        self, prompt: str, response: str, principles: list[Principle]
    ) -> tuple[str, str]:
        """The critic input split into the part shared by every candidate and the rest.

        The shared part (instructions, principles, rubric, few-shot examples) is found by
        rendering the template with a sentinel in place of the request, so the split follows
        whatever the chat template wraps around the judge text.
        """
        full = self._render(neutralise(prompt, self.special_tokens), response, principles)
        shared = self._render(_SENTINEL, "", principles).split(_SENTINEL, 1)[0]
        return shared, full[len(shared) :]

    def reply_spans(
        self, replies: list[str], rests: list[str], principles: list[Principle]
    ) -> list[tuple[int, int]]:
        """Where each reply lies in its rest (`judge_parts`' second part): its first and one
        past its last character. What follows the reply (the template's closing lines) is the
        same for every row, so one rendering with sentinels finds it for the whole batch; this
        holds for any template and chat template that put the reply in verbatim."""
        tail = self._render(_SENTINEL, _SENTINEL, principles).rsplit(_SENTINEL, 1)[1]
        spans = []
        for reply, rest in zip(replies, rests, strict=True):
            end = len(rest) - len(tail)
            start = end - len(reply)
            if not rest.endswith(tail) or rest[start:end] != reply:
                raise ValueError("the judge template changed the reply's text; cannot locate it")
            spans.append((start, end))
        return spans

    def _render(self, request: str, reply: str, principles: list[Principle]) -> str:
        """The whole critic input for one (request, reply), ending where the digit comes."""
        template = self.constitution.template
        judge = template.judge.substitute(
            principles=_format_principles(principles), prompt=request, response=reply
        )
        if template.style == "instruct":
            chat: str = self.loaded.tokenizer.apply_chat_template(
                [{"role": "user", "content": judge}], add_generation_prompt=True, tokenize=False
            )
            return chat + template.answer_prefix
        return judge + template.answer_prefix

    @torch.inference_mode()
    def read(self, prefix: str, suffixes: list[str], keys: list[str]) -> list[DigitReading]:
        """Digit distributions for a batch of inputs that all start with `prefix`."""
        inputs = self.prefixes.inputs(prefix, suffixes, keys)
        logits = self.loaded.model(**inputs, **self.loaded.last_logits_only).logits[:, -1, :]
        return read_digits(logits, self.digit_ids)

    def probe_features(
        self, rows: list[tuple[str, str]], keys: list[str], layer: int, request_layer: int
    ) -> Features:
        """Probe features of (request, reply) rows, judged against every principle at once.

        Replies are cleaned as for scoring; an empty one is read as the empty reply.
        """
        cleaned = [(prompt, self._clean_response(response)) for prompt, response in rows]
        return self._cleaned_features(cleaned, keys, layer, request_layer)

    def _cleaned_features(
        self, cleaned: list[tuple[str, str]], keys: list[str], layer: int, request_layer: int
    ) -> Features:
        """Probe features of (request, already cleaned reply) rows under every principle."""
        principles = self.constitution.principles
        judged = [self.judge_parts(prompt, reply, principles) for prompt, reply in cleaned]
        spans = self.reply_spans(
            [reply for _, reply in cleaned], [r for _, r in judged], principles
        )
        return self.feature_reader.features(cleaned, judged, spans, keys, layer, request_layer)

    def critique(self, candidates: list[Candidate]) -> list[dict[str, Any]]:
        """Critique dicts (the `Critique` fields) for a batch of candidates, in order."""
        # An empty reply is scored like any other: the rubric ranks it as useless, and the
        # probe learned it from constructed empty replies.
        cleaned = [self._clean_response(c.response) for c in candidates]
        records = [self._blank_record(c) for c in candidates]
        if not candidates:
            return records
        # Every method's distribution obeys the rubric's ceiling for a useless reply (degenerate
        # or a fragment), as the critic reads it, and the methods with an on-task head its rule
        # for a reply with nothing of its request in it (minicc/rubric.py).
        useless = useless_rows(
            [(c.prompt, text) for c, text in zip(candidates, cleaned, strict=True)]
        )
        if self.probe is not None:
            self._probe_scores(candidates, cleaned, records, useless)
        elif self.lora is not None:
            pairs = [(c.prompt, c.response) for c in candidates]  # it cleans and cuts them itself
            related = cosines(self.embedder, [c.prompt for c in candidates], cleaned)
            distribution = self.lora.distribution(pairs, related)
            _record_distribution(records, cap_useless(distribution, useless))
        else:
            self._judge_scores(candidates, cleaned, records, useless)
        if self.params.explain:
            self._add_rationales(records, cleaned)
        return records

    def _probe_scores(
        self,
        candidates: list[Candidate],
        cleaned: list[str],
        records: list[dict[str, Any]],
        useless: list[bool],
    ) -> None:
        """The probe's heads (minicc/probe.py) over the critic's features."""
        assert self.probe is not None
        features = self._cleaned_features(
            [(c.prompt, text) for c, text in zip(candidates, cleaned, strict=True)],
            [c.candidate_id for c in candidates],
            self.probe.layer,
            self.probe.request_layer,
        )
        request_logits = None
        if self.request_classifier is not None:
            request_logits = self.request_classifier.logits([c.prompt for c in candidates])
        distribution = self.probe.distribution(features, request_logits)
        _record_distribution(records, cap_useless(distribution, useless))

    def _judge_scores(
        self,
        candidates: list[Candidate],
        cleaned: list[str],
        records: list[dict[str, Any]],
        useless: list[bool],
    ) -> None:
        by_candidate: list[list[DigitReading]] = [[] for _ in candidates]
        for group in self.principle_groups:
            parts = [
                self.judge_parts(c.prompt, text, group)
                for c, text in zip(candidates, cleaned, strict=True)
            ]
            readings = self.read(
                parts[0][0], [suffix for _, suffix in parts], [c.candidate_id for c in candidates]
            )
            for collected, reading, capped in zip(by_candidate, readings, useless, strict=True):
                collected.append(_capped_reading(reading) if capped else reading)
        principle_ids = (
            [group[0].id for group in self.principle_groups] if self.params.per_principle else None
        )
        for record, readings in zip(records, by_candidate, strict=True):
            record.update(judged_fields(readings, principle_ids, self.params))

    def _blank_record(self, candidate: Candidate) -> dict[str, Any]:
        return {
            "prompt_id": candidate.prompt_id,
            "candidate_id": candidate.candidate_id,
            "prompt": candidate.prompt,
            "category": candidate.category,
            "response": candidate.response,
            "generator": candidate.generator,
            "critic": self.critic_id,
            "constitution_version": self.constitution.version,
            "style": self.params.style,
            "scored": False,
            "unscored_reason": None,
            "probabilities": None,
            "digit_mass": None,
            "score": None,
            "safe": None,
            "principle_scores": None,
            "rationale": None,
        }

    def _add_rationales(self, records: list[dict[str, Any]], cleaned: list[str]) -> None:
        """A short greedy explanation after the verdict, for people to read; never scored."""
        requests = [
            Request(
                key=record["candidate_id"],
                text=self.judge_input(record["prompt"], text, self.constitution.principles)
                + f" {round(record['score'])}\nReason:",
            )
            for record, text in zip(records, cleaned, strict=True)
            if record["scored"]
        ]
        if not requests:
            return
        greedy = Decoding(
            do_sample=False,
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=self.params.explain_max_new_tokens,
        )
        explained = {r["key"]: r["text"] for r in complete(self.loaded, requests, greedy, seed=0)}
        for record in records:
            record["rationale"] = explained.get(record["candidate_id"])


def _capped_reading(reading: DigitReading) -> DigitReading:
    """A judge's reading of a useless reply (degenerate or a fragment) under the rubric's
    ceiling (minicc/rubric.py); each principle's reading is capped, so per-principle scores and
    their combination agree."""
    (capped,) = cap_useless(np.array([reading.probabilities]), [True])
    return DigitReading(
        probabilities=[round(p, 6) for p in capped.tolist()],
        digit_mass=reading.digit_mass,
        score=round(float(scores_of(capped)), 6),
    )


def _record_distribution(records: list[dict[str, Any]], distribution: FloatArray) -> None:
    """A trained critic's verdicts: the rubric distribution as probabilities, its expectation
    as the score, and P(harmful help) = P(1) as the safety verdict."""
    for record, row, score in zip(
        records, distribution.tolist(), scores_of(distribution).tolist(), strict=True
    ):
        record.update(
            scored=True,
            probabilities=[round(p, 6) for p in row],
            score=round(score, 6),
            safe=row[0] < HARMFUL_PROBABILITY,
        )


def critique_candidates(
    critic: Critic, candidates: list[Candidate], batch_size: int, log: ResumeLog
) -> tuple[list[Critique], RunCount]:
    """Critique every candidate, in candidate-file order.

    Candidates are batched by `Critic.reading_length` so a batch carries little padding; each
    batch's result is logged so a crash loses at most one batch. Before the first batch that is not
    resumed, the probe's request states are read for every candidate, so a resumed run scores
    as an uninterrupted one.
    """
    batches = length_sorted_batches(
        candidates,
        lambda c: critic.reading_length(c.prompt, c.response),
        lambda c: c.candidate_id,
        batch_size,
    )
    probe = critic.probe

    def read_requests() -> None:
        if probe is not None:
            critic.feature_reader.read_ahead([c.prompt for c in candidates], probe.request_layer)

    results, count = run_resumable(batches, critic.critique, log, "critique", read_requests)
    by_id = {r["candidate_id"]: r for r in results}
    return [Critique(**by_id[c.candidate_id]) for c in candidates], count


def critique_inputs(
    candidates: list[Candidate], params: CritiqueParams, critic_id: str, constitution: Constitution
) -> dict[str, Any]:
    """Everything that changes critiques; names the resume log.

    Pass `Critic.critic_id`: with a probe it carries the probe's hash, so a retrained probe
    never resumes an old log.
    """
    return {
        "candidates": [asdict(c) for c in candidates],
        "params": asdict(params),
        "critic": critic_id,
        "constitution": constitution.version,
    }


@contextmanager
def resumable_critiques(
    stage: str, critic: Critic, candidates: list[Candidate], batch_size: int
) -> Iterator[tuple[list[Critique], RunCount]]:
    """Critiques of every candidate, finished batches resumed from the stage's log.

    The log is discarded only when the block (writing the stage's outputs) succeeds, so a
    crash while writing loses no critique.
    """
    inputs = critique_inputs(candidates, critic.params, critic.critic_id, critic.constitution)
    with resumable(stage, inputs) as log:
        yield critique_candidates(critic, candidates, batch_size, log)


@dataclass(frozen=True)
class CriticFiles:
    """The files a critic reads besides its model: constitution, judge templates, trained critic."""

    principles: Path
    instruct_template: Path
    base_template: Path
    trained: Path
    """train_critic's directory (minicc/trained_critic.py), read for methods probe and lora."""


@dataclass(frozen=True)
class CriticSetup:
    """What a critic reads besides its model, loaded and checked before the (slow) model."""

    constitution: Constitution
    probe: Probe | None
    lora: Path | None = None
    """The fine-tuned critic's directory, its manifest checked; loaded with the model."""
    request_classifier: RequestClassifier | None = None
    """The probe's fine-tuned request classifier, if it was trained with one."""


def probe_setup(
    constitution: Constitution, probe_file: Path, expected: CriticProbeParams | None = None
) -> CriticSetup:
    """A probe and the request classifier in the directory beside it that it names; with
    `expected`, a probe with other heads or another harm gating is refused."""
    probe = load_probe(probe_file)
    if expected is not None:
        probe.check_design(probe_file, expected.heads, expected.gated_harm)
    classifier = None
    if probe.request_classifier is not None:
        classifier = load_request_classifier(
            probe_file.parent / REQUEST_CLASSIFIER_DIR, probe.request_classifier
        )
    return CriticSetup(constitution, probe, request_classifier=classifier)


def critic_setup(params: Params, files: CriticFiles, method: CriticMethod) -> CriticSetup:
    """The constitution in the configured style and, for a trained method, the trained critic.

    Stages call this before reading their inputs and loading the model, so a missing or broken
    constitution or trained critic fails in a second. Stages pass `params.critique.method`;
    train_critic passes `judge`, as it reads features before any probe exists.
    """
    style = params.critique.style
    template = files.instruct_template if style == "instruct" else files.base_template
    constitution = load_constitution(files.principles, template, style)
    if method == "judge":
        return CriticSetup(constitution, None)
    if method == "lora":
        directory = trained_path(files.trained, method)
        check_manifest(directory, constitution.version, params.critic_probe.heads)
        return CriticSetup(constitution, None, directory)
    return probe_setup(constitution, trained_path(files.trained, method), params.critic_probe)


def setup_critic(
    loaded: LoadedModel,
    critique: CritiqueParams,
    setup: CriticSetup,
    lora: LoraCritic | None = None,
) -> Critic:
    """The critic a setup describes, on an already loaded model (`lora`: the fine-tuned critic
    its `lora` directory holds, loaded with the model)."""
    return Critic(loaded, setup.constitution, critique, setup.probe, lora, setup.request_classifier)


def open_critic(params: Params, setup: CriticSetup) -> Critic:
    """The critic the params configure, model loaded."""
    loaded = load_model(params.models.critic, params.models)
    lora = None
    if setup.lora is not None:
        lora = load_critic_lora(
            setup.lora,
            resolve_model(params.models.critic, params.models),
            setup.constitution.version,
            params.critic_probe.heads,
            params.critique.batch_size,
            loaded.model.dtype,
            loaded.device,
        )
    return setup_critic(loaded, params.critique, setup, lora)
