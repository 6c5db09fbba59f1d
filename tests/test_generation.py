"""Batched, seeded, resumable generation on tiny random-weight models."""

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ARCHS, Arch, MakeModel, generate_params, models_params

from minicc import generation
from minicc.errors import UserError
from minicc.generation import (
    Decoding,
    Request,
    _inverse_cdf,
    answer_inputs,
    answer_prompts,
    candidate_plan,
    complete,
    pick_next_tokens,
    plan_batches,
    row_generators,
    shared_prefix,
)
from minicc.models import LoadedModel, load_model
from minicc.params import GenerateParams
from minicc.prompting import dialogue_stops, format_request, request_stops
from minicc.records import Candidate, Prompt
from minicc.resume import ResumeLog, RunCount

# Distinctive words a random model will not produce by chance.
PROMPTS = [
    Prompt("p-zebra", "Zebra marmalade quantum harmonica?", "cooperative", "test:1"),
    Prompt(
        "p-walrus", "Walrus origami thermostat lullaby, please explain.", "borderline", "test:2"
    ),
    Prompt("p-xylo", "Xylophone?", "adversarial", "test:3"),
]


def generate(
    loaded: LoadedModel,
    log_dir: Path,
    params: GenerateParams | None = None,
    seed: int = 7,
    prompts: list[Prompt] = PROMPTS,
) -> tuple[list[Candidate], RunCount, ResumeLog]:
    params = generate_params() if params is None else params
    plan = candidate_plan(params)
    log = ResumeLog(log_dir, "generate", answer_inputs(prompts, plan, seed, loaded.model_id))
    candidates, count = answer_prompts(loaded, prompts, plan, seed, log)
    return candidates, count, log


def check_finish_reasons(candidates: list[Candidate], max_new_tokens: int) -> None:
    for c in candidates:
        assert 0 <= c.num_tokens <= max_new_tokens
        if c.finish_reason == "length":
            assert c.num_tokens == max_new_tokens, c
        else:
            assert c.finish_reason == "eos"  # a chat model: no stop texts
            # The EOS token is not counted, and it was one of the max_new_tokens generated.
            assert c.num_tokens < max_new_tokens, c


def test_candidates_per_prompt_in_prompt_order(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    candidates, count, _ = generate(tiny_llama, tmp_path)
    assert [c.candidate_id for c in candidates] == [
        f"{p.id}/{k}" for p in PROMPTS for k in range(2)
    ]
    by_id = {p.id: p for p in PROMPTS}
    for c in candidates:
        prompt = by_id[c.prompt_id]
        assert c.candidate_id.startswith(c.prompt_id + "/")
        assert (c.prompt, c.category) == (prompt.prompt, prompt.category)
        assert c.generator == tiny_llama.model_id
    # 6 requests in batches of 2.
    assert count == RunCount(batches_run=3, batches_resumed=0)


def test_response_is_only_the_new_text(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    candidates, _, _ = generate(tiny_llama, tmp_path, generate_params(max_new_tokens=12))
    for c in candidates:
        assert c.prompt not in c.response
        for marker in ("<|im_start|>", "<|im_end|>", "Zebra", "Walrus", "Xylophone"):
            assert marker not in c.response
        assert c.response == c.response.strip()


def test_token_counts_and_finish_reasons(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    params = generate_params(max_new_tokens=5, num_candidates=3)
    candidates, _, _ = generate(tiny_llama, tmp_path, params)
    check_finish_reasons(candidates, params.max_new_tokens)


def test_eos_ends_a_response_early(make_tiny_model: MakeModel, tmp_path: Path) -> None:
    """Phi's output layer has a bias: raising it on EOS makes the model stop early often."""
    loaded = load_model(str(make_tiny_model("phi")), models_params())
    with torch.no_grad():
        loaded.model.lm_head.bias[loaded.tokenizer.eos_token_id] = 4.5
    params = generate_params(max_new_tokens=8, num_candidates=4, batch_size=3)
    candidates, _, _ = generate(loaded, tmp_path, params)
    check_finish_reasons(candidates, params.max_new_tokens)
    assert {c.finish_reason for c in candidates} == {"eos", "length"}
    assert all("<|im_end|>" not in c.response for c in candidates)


def test_same_seed_same_candidates(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    first, _, _ = generate(tiny_llama, tmp_path / "a", seed=7)
    second, count, _ = generate(tiny_llama, tmp_path / "b", seed=7)
    assert count.batches_resumed == 0
    assert first == second


def test_different_seed_different_responses(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    first, _, _ = generate(tiny_llama, tmp_path / "a", seed=7)
    second, _, _ = generate(tiny_llama, tmp_path / "b", seed=8)
    assert [c.response for c in first] != [c.response for c in second]


def test_candidates_of_one_prompt_are_distinct_samples(
    tiny_llama: LoadedModel, tmp_path: Path
) -> None:
    params = generate_params(num_candidates=3, batch_size=3, max_new_tokens=8)
    candidates, _, _ = generate(tiny_llama, tmp_path, params, prompts=PROMPTS[:1])
    assert len({c.response for c in candidates}) == 3


def _lines(log: ResumeLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("kept", "torn"),
    [
        pytest.param([0], False, id="first-batch"),
        pytest.param([1], False, id="middle-batch-only"),
        pytest.param([0], True, id="first-batch-then-torn-line"),
    ],
)
def test_resumed_run_equals_uninterrupted_run(
    tiny_llama: LoadedModel, tmp_path: Path, kept: list[int], torn: bool
) -> None:
    full, full_count, full_log = generate(tiny_llama, tmp_path / "full")
    lines = _lines(full_log)
    assert len(lines) == full_count.batches_run == 3

    # A crash after some batches: the log holds only those (and maybe half of the next line).
    crashed_dir = tmp_path / "crashed"
    crashed_dir.mkdir()
    partial = b"".join(lines[i] for i in kept) + (lines[2][: len(lines[2]) // 2] if torn else b"")
    (crashed_dir / full_log.path.name).write_bytes(partial)

    resumed, count, log = generate(tiny_llama, crashed_dir)
    assert log.path.name == full_log.path.name
    assert resumed == full
    assert count.batches_resumed == len(kept)
    assert count.batches_run == 3 - len(kept)
    assert sorted(_lines(log)) == sorted(lines)


def test_rerun_with_a_complete_log_runs_nothing(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    first, _, _ = generate(tiny_llama, tmp_path)
    again, count, _ = generate(tiny_llama, tmp_path)
    assert again == first
    assert count == RunCount(batches_run=0, batches_resumed=3)


def _text_of_length(loaded: LoadedModel, tokens: int) -> str:
    ids = loaded.tokenizer("egg " * (2 * tokens), add_special_tokens=False)["input_ids"]
    text: str = loaded.tokenizer.decode(ids[:tokens])
    assert len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) == tokens
    return text


def test_plan_batches_rejects_a_request_longer_than_the_context(tiny_llama: LoadedModel) -> None:
    limit = tiny_llama.model.config.max_position_embeddings
    assert limit == 256
    fits = Request("p-fits/0", _text_of_length(tiny_llama, limit - 10))
    too_long = Request("p-long/1", _text_of_length(tiny_llama, limit - 9))
    assert len(plan_batches(tiny_llama, [fits], batch_size=4, max_new_tokens=10)) == 1
    with pytest.raises(UserError, match="p-long/1") as error:
        plan_batches(tiny_llama, [fits, too_long], batch_size=4, max_new_tokens=10)
    assert "256" in str(error.value)


def test_generate_names_the_prompt_that_is_too_long(
    tiny_llama: LoadedModel, tmp_path: Path
) -> None:
    long_prompt = Prompt("p-long", "egg " * 300, "cooperative", "test:4")
    with pytest.raises(UserError, match="p-long/0"):
        generate(tiny_llama, tmp_path, prompts=[*PROMPTS, long_prompt])


def test_plan_batches_groups_by_length(tiny_llama: LoadedModel) -> None:
    requests = [Request(f"r{n}", _text_of_length(tiny_llama, n)) for n in (9, 2, 7, 4, 5)]
    batches = plan_batches(tiny_llama, requests, batch_size=2, max_new_tokens=4)
    assert [[r.key for r in b.items] for b in batches] == [["r2", "r4"], ["r5", "r7"], ["r9"]]
    assert [b.key for b in batches] == ["r2", "r5", "r9"]


def test_torn_last_line_of_a_resume_log_is_dropped(tmp_path: Path) -> None:
    log = ResumeLog(tmp_path, "stage", {"inputs": 1})
    log.append("a", [1, 2])
    log.append("b", [{"text": "ok"}])
    good = log.path.read_bytes()
    with log.path.open("ab") as handle:
        handle.write(b'{"unit": "c", "result": [3')
    assert log.load() == {"a": [1, 2], "b": [{"text": "ok"}]}
    assert log.path.read_bytes() == good
    log.append("c", [3])
    assert log.load() == {"a": [1, 2], "b": [{"text": "ok"}], "c": [3]}


def test_resume_log_name_depends_on_the_inputs(tmp_path: Path) -> None:
    assert ResumeLog(tmp_path, "s", {"x": 1}).path == ResumeLog(tmp_path, "s", {"x": 1}).path
    assert ResumeLog(tmp_path, "s", {"x": 1}).path != ResumeLog(tmp_path, "s", {"x": 2}).path


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_smoke_every_architecture(
    make_tiny_model: MakeModel, arch: Arch, tmp_path: Path
) -> None:
    loaded = load_model(str(make_tiny_model(arch)), models_params())
    params = generate_params(max_new_tokens=4, num_candidates=2, batch_size=3)
    candidates, count, _ = generate(loaded, tmp_path / "a", params)
    assert [c.candidate_id for c in candidates] == [
        f"{p.id}/{k}" for p in PROMPTS for k in range(2)
    ]
    assert count.batches_run == 2
    check_finish_reasons(candidates, params.max_new_tokens)
    again, _, _ = generate(loaded, tmp_path / "b", params)
    assert again == candidates


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_completion_does_not_depend_on_the_batch(
    make_tiny_model: MakeModel, arch: Arch
) -> None:
    """Left padding must not shift a row's positions (GPT-Neo has absolute position embeddings)."""
    loaded = load_model(str(make_tiny_model(arch)), models_params())
    short = Request("short", format_request(loaded, "Xylophone?"))
    long = Request("long", format_request(loaded, PROMPTS[1].prompt * 3))
    greedy = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=8)
    (alone,) = complete(loaded, [short], greedy, seed=0)
    together = complete(loaded, [short, long], greedy, seed=0)
    assert together[0] == alone


def test_a_sampled_row_does_not_depend_on_the_batch(tiny_llama: LoadedModel) -> None:
    """Each row samples from its own key's stream: alone, first or last in a batch, its answer
    is the same in float32 (a stream per batch, seeded from the first key, redrew every row of a
    batch whose first row changed)."""
    row = Request("row", format_request(tiny_llama, "Xylophone?"))
    others = [
        Request(f"other-{i}", format_request(tiny_llama, PROMPTS[i].prompt * (i + 1)))
        for i in range(2)
    ]
    sampled = Decoding(do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=10)
    (alone,) = complete(tiny_llama, [row], sampled, seed=3)
    assert complete(tiny_llama, [row, *others], sampled, seed=3)[0] == alone
    assert complete(tiny_llama, [*others, row], sampled, seed=3)[-1] == alone
    assert complete(tiny_llama, [row], sampled, seed=4)[0] != alone


def test_inverse_cdf_picks_where_the_uniform_falls_and_never_a_zero_weight() -> None:
    weights = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]])
    picks = {u: int(_inverse_cdf(weights, torch.tensor([[u]]))) for u in (0.0, 0.49, 0.5, 0.99)}
    assert picks == {0.0: 1, 0.49: 1, 0.5: 3, 0.99: 3}
    # Rounding can put u * total on the last cumulative value: still the last positive weight.
    assert int(_inverse_cdf(weights, torch.tensor([[1.0]]))) == 3


def test_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    decoding = Decoding(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=1)
    (generator,) = row_generators(torch.device("cpu"), 0, ["row"])
    draws = [
        int(pick_next_tokens(probs.log().unsqueeze(0), decoding, [generator])) for _ in range(4000)
    ]
    frequencies = torch.bincount(torch.tensor(draws), minlength=4).float() / len(draws)
    assert torch.allclose(frequencies, probs, atol=0.03), frequencies


def test_a_rows_token_does_not_depend_on_how_wide_its_nucleus_search_was() -> None:
    """A flat row beside it makes the batch sort the whole vocabulary instead of its top 512:
    the peaked row must still draw the same tokens."""
    vocab = 2000
    peaked = torch.full((vocab,), -20.0)
    peaked[:6] = torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0, 0.5])
    flat = torch.zeros(vocab)
    decoding = Decoding(do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=1)

    def draws(batch: list[torch.Tensor]) -> list[int]:
        generators = row_generators(torch.device("cpu"), 0, [str(i) for i in range(len(batch))])
        logits = torch.stack(batch)
        return [int(pick_next_tokens(logits, decoding, generators)[0]) for _ in range(200)]

    alone = draws([peaked])
    assert len(set(alone)) > 1
    assert draws([peaked, flat]) == alone


def test_a_shared_prefix_read_once_gives_the_same_greedy_answers(critic_llama: LoadedModel) -> None:
    examples = "Worked example: zebra marmalade.\nAnother: walrus origami.\n"
    requests = [
        Request(f"r{i}", format_request(critic_llama, examples + "Xylophone? " * (1 + i)))
        for i in range(3)
    ]
    greedy = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=6)
    shared = shared_prefix(critic_llama, requests)
    assert shared is not None and shared.text.endswith(examples)
    assert complete(critic_llama, requests, greedy, 0, shared) == complete(
        critic_llama, requests, greedy, 0
    )


@pytest.mark.parametrize("copies", [1, 2])
def test_a_shared_prefix_leaves_every_request_something_to_read(
    critic_llama: LoadedModel, copies: int
) -> None:
    # A chat-formatted request ends with a line break: alone (or repeated), all of it is
    # "common text", and the prefix must still stop before its end.
    text = format_request(critic_llama, "Worked example: zebra marmalade.\nNow you: walrus?")
    requests = [Request(f"r{i}", text) for i in range(copies)]
    shared = shared_prefix(critic_llama, requests)
    assert shared is not None and text.startswith(shared.text) and len(shared.text) < len(text)
    assert shared.text.endswith("\n")
    greedy = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=6)
    assert complete(critic_llama, requests, greedy, 0, shared) == complete(
        critic_llama, requests, greedy, 0
    )


def test_no_shared_prefix_without_a_common_line() -> None:
    requests = [Request("a", "abc"), Request("b", "abd")]
    assert shared_prefix(None, requests) is None  # type: ignore[arg-type]


def test_system_prompt_reaches_chat_and_base_models(make_tiny_model: MakeModel) -> None:
    chat = load_model(str(make_tiny_model("llama")), models_params())
    base = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    assert "Be kind." in format_request(chat, "Hi?", "Be kind.")
    assert "Be kind." not in format_request(chat, "Hi?")
    assert format_request(base, "Hi?", "Be kind.") == "Be kind.\n\n" + format_request(base, "Hi?")


def test_constitution_guided_candidates_record_their_system_prompt(
    tiny_llama: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Request] = []
    real = generation.complete_requests

    def recording(loaded: LoadedModel, requests: list[Request], *args: Any, **kwargs: Any) -> Any:
        seen.extend(requests)
        return real(loaded, requests, *args, **kwargs)

    monkeypatch.setattr(generation, "complete_requests", recording)
    plan = candidate_plan(generate_params(system_prompt="constitution"), "Be kind.")
    log = ResumeLog(tmp_path, "generate", answer_inputs(PROMPTS, plan, 7, tiny_llama.model_id))
    guided, _ = answer_prompts(tiny_llama, PROMPTS, plan, 7, log)
    plain, _, _ = generate(tiny_llama, tmp_path / "plain")
    assert {c.system_prompt for c in guided} == {"constitution"}
    assert {c.system_prompt for c in plain} == {"none"}
    guided_inputs, plain_inputs = seen[: len(guided)], seen[len(guided) :]
    assert all("Be kind." in r.text for r in guided_inputs)
    assert not any("Be kind." in r.text for r in plain_inputs)
    # What build_sft trains on is the bare request: the system prompt stays out of the record.
    assert all("Be kind." not in c.prompt for c in guided)


def test_constitution_system_prompt_needs_the_constitution() -> None:
    with pytest.raises(UserError, match="generate.system_prompt is 'constitution'"):
        candidate_plan(generate_params(system_prompt="constitution"))


def test_a_stop_text_ends_the_answer_where_it_begins(make_tiny_model: MakeModel) -> None:
    base = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    requests = [Request("a", format_request(base, "Xylophone?"))]
    greedy = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=24)
    (free,) = complete(base, requests, greedy, seed=0)
    text = free["text"]
    middle = len(text) // 2
    stop = text[middle : middle + 3]
    assert len(stop) == 3 and free["num_tokens"] > 2, free
    (stopped,) = complete(base, requests, greedy, seed=0, stop_texts=(stop,))
    assert stopped["text"] == text[: text.find(stop)].strip()
    assert stopped["finish_reason"] == "stop"
    assert stopped["num_tokens"] < free["num_tokens"]
    # A stop text the answer never holds changes nothing.
    assert complete(base, requests, greedy, seed=0, stop_texts=("\x00never",)) == [free]


def test_a_base_model_answer_ends_at_the_next_user_turn(
    make_tiny_model: MakeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base model has no end-of-turn token: its answers stop at the dialogue's next "User:"
    line, its revision turns at a blank line; a chat model's at its end-of-turn token only."""
    chat = load_model(str(make_tiny_model("llama")), models_params())
    base = load_model(str(make_tiny_model("llama", chat=False)), models_params())
    assert (request_stops(chat), dialogue_stops(chat)) == ((), ())
    assert (request_stops(base), dialogue_stops(base)) == (("\nUser:",), ("\n\n",))
    seen: list[tuple[str, ...]] = []
    real_complete = generation.complete

    def recording(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        seen.append(kwargs.get("stop_texts", args[5] if len(args) > 5 else ()))
        return real_complete(*args, **kwargs)

    monkeypatch.setattr(generation, "complete", recording)
    generate(base, tmp_path / "base")
    generate(chat, tmp_path / "chat")
    assert set(seen[: len(seen) // 2]) == {("\nUser:",)}
    assert set(seen[len(seen) // 2 :]) == {()}
