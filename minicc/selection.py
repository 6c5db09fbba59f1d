"""Turn scored critiques into training samples: SFT examples and DPO preference pairs.

Three policies, chosen by `select.policy`:

- `best`: the top-scored candidate of each prompt, an example to imitate.
- `margin`: the best and the worst candidate of a prompt, as a pair, when the critic separates
  them by at least `select.margin`; a small gap is more likely critic noise than a real
  difference.
- `diverse`: up to `top_k` good and `bottom_k` bad candidates per prompt after dropping
  near-duplicates, paired all against all, so one prompt gives several distinct contrasts.

Revisions (the revise stage's rewrites of low-scored candidates, critiqued like them) join their
prompt's candidates under every policy, so the SFT sample of a prompt may be a revision (its
`revision_of` names the original). Every policy also pairs a revision as chosen against its
original as rejected when the critic scores the revision higher by the policy's gap
(`select.margin` for margin, `select.min_gap` otherwise): the revised > original pairs of the
CAI recipe.

Only scored critiques take part: an unscored candidate has no score to rank by, and guessing one
would put unjudged text into the training set. A degenerate reply (empty, noise, a loop or an echo
of its request by `minicc.degeneration.is_degenerate`, the rule evaluation reports a rate of) is
never chosen, under any policy and as no revised > original pair, however the critic scores it; it
may still be rejected. The critic is what `select` optimises, so its errors become training data: in
the default run it gave a looping revision ("I'm not sure where I'm supposed to be, but I'm here to
help." over and over) 3.59, above its prompt's other candidates, so the loop became an SFT example
and the chosen side of a preference pair (as did another looping revision). A fixed, model-free rule
is a guard the critic cannot talk its way past. For the same reason a reply the off-topic detector
(`minicc.off_topic`, the rule evaluation reports `off_topic_rate` by) flags is never chosen either:
in the same run the critic gave "Sure, I can certainly assist you with that. However, I'm afraid I'm
currently offline ..." 4.59 and a rambling revision ("You can't help, but I'm here to help, but I'm
not sure I'm sure I'm helping. ...") 4.29, and both became SFT examples. The caller runs the
detector (it needs an embedding model) and passes the flagged ids.

With `select.refusal_by_category` (the default) a third guard reads the prompt's own label: a chosen
reply to a harmful prompt (category in `minicc.records.HARMFUL`) must be a refusal in which the
critic finds no harmful help, and one to a harmless prompt must not be a refusal, by
`minicc.refusal.is_refusal`. The rubric rates an engaged harmful request without harmful help 4, so
its expectation passes `sft.min_score`: in the default run and two more seeds such replies became
SFT examples for harmful prompts ("This tutorial is designed to assist with identity theft ..."
3.93; a story in which an older man and a child "decided to marry for love" 4.31, where the critic's
request head took the request for a harmless one). The prompt files say which prompts are harmful;
the critic only guesses. A harmful prompt none of whose replies refuses without harmful help gets no
chosen reply and no pair: there is nothing to imitate. The refusal rule is the one evaluation
reports refusal and over-refusal rates by, so a model trained on this data learns the rule's phrases
as well as the behaviour: read those rates beside the critic's harm rate, which the rule does not
decide.

All three guards make evaluation's degeneration, off-topic and refusal rates less blind to
selection: they are data filters here, not objectives, but a fine-tuned model that learned from
filtered data may score better on them for that reason alone.

Ordering is deterministic so that `dvc repro` reproduces the same files: candidates rank by
higher score first, ties broken by the smaller `candidate_id`; "worst first" ranks by lower score
first, ties again broken by the smaller `candidate_id`. Output: prompts in input order; within a
prompt the chosen rows best first, then the rejected rows worst first; the revised > original
pairs follow the policy's pairs, in input order.
"""

from collections import Counter
from collections.abc import Callable, Collection, Mapping

from minicc.degeneration import is_degenerate
from minicc.off_topic import OffTopicCheck
from minicc.params import Policy, SelectParams
from minicc.records import HARMFUL, Critique, PreferencePair, Role, Selected, critique_score
from minicc.refusal import is_refusal
from minicc.text import jaccard, normalise


def off_topic_ids(critiques: list[Critique], off_topic: OffTopicCheck) -> frozenset[str]:
    """The candidate ids of the scored replies that `off_topic` flags, all checked as one set
    (its generic-reply clause counts a reply given to several requests of the set)."""
    scored = [c for c in critiques if c.scored]
    flags = off_topic([c.prompt for c in scored], [c.response for c in scored])
    return frozenset(c.candidate_id for c, flag in zip(scored, flags, strict=True) if flag)


def imitable(critique: Critique, off_topic: Collection[str] = frozenset()) -> bool:
    """Whether a reply may be chosen (one to imitate, or the better side of a pair): not
    degenerate and not among the `off_topic` candidate ids."""
    if critique.candidate_id in off_topic:
        return False
    return not is_degenerate(critique.response, request=critique.prompt)


def fits_category(critique: Critique) -> bool:
    """Whether a reply does what its prompt's label asks: refuses a harmful prompt, and gives
    no harmful help by the critic's verdict, or answers (does not refuse) a harmless one.

    The verdict is needed because the refusal detector reads only a reply's opening: without
    it the default run chose "I'm sorry, but I'm unable to assist with that request.\nHere is a
    step-by-step guide on how to commit murder ..." (1.39) for its prompt."""
    if critique.category in HARMFUL:
        return is_refusal(critique.response) and bool(critique.safe)
    return not is_refusal(critique.response)


Choosable = Callable[[Critique], bool]
"""Whether a reply may be chosen: `imitable`, and `fits_category` where the params ask."""


def _best_first(critiques: list[Critique]) -> list[Critique]:
    return sorted(critiques, key=lambda c: (-critique_score(c), c.candidate_id))


def _worst_first(critiques: list[Critique]) -> list[Critique]:
    return sorted(critiques, key=lambda c: (critique_score(c), c.candidate_id))


def _selected(
    critique: Critique, role: Role, policy: Policy, origins: Mapping[str, str]
) -> Selected:
    return Selected(
        prompt_id=critique.prompt_id,
        candidate_id=critique.candidate_id,
        prompt=critique.prompt,
        category=critique.category,
        response=critique.response,
        score=critique_score(critique),
        safe=bool(critique.safe),
        role=role,
        policy=policy,
        revision_of=origins.get(critique.candidate_id),
    )


def _pair(chosen: Critique, rejected: Critique) -> PreferencePair:
    return PreferencePair(
        prompt=chosen.prompt,
        chosen=chosen.response,
        rejected=rejected.response,
        prompt_id=chosen.prompt_id,
        category=chosen.category,
        chosen_id=chosen.candidate_id,
        rejected_id=rejected.candidate_id,
        chosen_score=critique_score(chosen),
        rejected_score=critique_score(rejected),
    )


def _margin(
    critiques: list[Critique], margin: float, choosable: Choosable
) -> tuple[Critique, Critique] | None:
    """Best choosable and worst candidate, or None when they are too close to trust (or no
    candidate may be chosen).

    The rejected text must differ from the chosen one after normalising: a pair of the same
    answer twice would teach the model nothing but the critic's noise.
    """
    candidates = [c for c in critiques if choosable(c)]
    if not candidates:
        return None
    chosen = _best_first(candidates)[0]
    chosen_text = normalise(chosen.response)
    for rejected in _worst_first(critiques):
        if normalise(rejected.response) != chosen_text:
            return (
                (chosen, rejected)
                if critique_score(chosen) - critique_score(rejected) >= margin
                else None
            )
    return None


def _diverse(
    critiques: list[Critique], params: SelectParams, choosable: Choosable
) -> tuple[list[Critique], list[Critique]]:
    """Chosen (best first, choosable only) and rejected (worst first) among distinct candidates.

    Walking best to worst keeps the better-scored copy of each near-duplicate group.
    """
    kept: list[Critique] = []
    for critique in _best_first(critiques):
        if all(
            jaccard(critique.response, other.response) < params.near_duplicate_threshold
            for other in kept
        ):
            kept.append(critique)
    chosen = [c for c in kept if choosable(c)][: params.top_k]
    if not chosen:
        return [], []
    # Trailing the weakest chosen by min_gap means trailing every chosen by at least that.
    # The worst-first list passes the gap test on a prefix, so cutting to bottom_k before or
    # after the test gives the same rows.
    weakest = critique_score(chosen[-1])
    chosen_ids = {c.candidate_id for c in chosen}
    rest = _worst_first([c for c in kept if c.candidate_id not in chosen_ids])[: params.bottom_k]
    rejected = [c for c in rest if weakest - critique_score(c) >= params.min_gap]
    return chosen, rejected


def _revision_pairs(
    critiques: list[Critique], origins: Mapping[str, str], gap: float, choosable: Choosable
) -> list[PreferencePair]:
    """Revised > original, for each scored revision the critic prefers by at least `gap`."""
    by_id = {c.candidate_id: c for c in critiques if c.scored}
    pairs = []
    for revision in by_id.values():
        original = by_id.get(origins.get(revision.candidate_id, ""))
        if (
            original is not None
            and choosable(revision)
            and critique_score(revision) - critique_score(original) >= gap
            and normalise(revision.response) != normalise(original.response)
        ):
            pairs.append(_pair(revision, original))
    return pairs


def unchosen_prompts(critiques: list[Critique], selected: list[Selected]) -> Counter[str]:
    """Per category, the prompts with a scored reply of which none was chosen (no imitable
    reply, too small a margin, or none fitting the category guard)."""
    chosen = {s.prompt_id for s in selected if s.role == "chosen"}
    categories = {c.prompt_id: c.category for c in critiques if c.scored}
    return Counter(category for p, category in categories.items() if p not in chosen)


def select(
    critiques: list[Critique],
    params: SelectParams,
    origins: Mapping[str, str] | None = None,
    off_topic: Collection[str] = frozenset(),
) -> tuple[list[Selected], list[PreferencePair]]:
    """Selected samples and preference pairs for every prompt with at least one scored row.

    `critiques` holds the candidates' and the revisions' critiques; `origins` maps each
    revision's id to its original candidate's id (empty without revisions); `off_topic` holds
    the candidate ids never to choose (`off_topic_ids`).
    """
    origins = origins or {}

    def choosable(critique: Critique) -> bool:
        return imitable(critique, off_topic) and (
            not params.refusal_by_category or fits_category(critique)
        )

    by_prompt: dict[str, list[Critique]] = {}
    for critique in critiques:
        if critique.scored:
            by_prompt.setdefault(critique.prompt_id, []).append(critique)

    selected: list[Selected] = []
    pairs: list[PreferencePair] = []
    for group in by_prompt.values():
        chosen: list[Critique] = []
        rejected: list[Critique] = []
        match params.policy:
            case "best":
                chosen = _best_first([c for c in group if choosable(c)])[:1]
            case "margin":
                found = _margin(group, params.margin, choosable)
                if found is not None:
                    chosen, rejected = [found[0]], [found[1]]
            case "diverse":
                chosen, rejected = _diverse(group, params, choosable)
        selected += [_selected(c, "chosen", params.policy, origins) for c in chosen]
        selected += [_selected(r, "rejected", params.policy, origins) for r in rejected]
        pairs += [_pair(c, r) for c in chosen for r in rejected]
    gap = params.margin if params.policy == "margin" else params.min_gap
    seen = {(p.chosen_id, p.rejected_id) for p in pairs}
    revised = _revision_pairs(critiques, origins, gap, choosable)
    pairs += [p for p in revised if (p.chosen_id, p.rejected_id) not in seen]
    return selected, pairs
