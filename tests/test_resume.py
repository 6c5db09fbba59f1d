"""Crash-safe progress: finished batches reused, torn lines dropped, logs discarded on success."""

import json
from pathlib import Path
from typing import Any

import pytest

from minicc import resume
from minicc.resume import (
    Batch,
    ResumeLog,
    RunCount,
    fingerprint,
    resumable,
    run_resumable,
    source_fingerprint,
)

MATERIAL: dict[str, Any] = {
    "prompts": [{"id": "p1", "prompt": "Hi"}, {"id": "p2", "prompt": "How?"}],
    "params": {"temperature": 0.8, "top_p": 0.95, "num_candidates": 4},
    "seed": 42,
    "model": "smollm2-135m-instruct@abc123",
}
BATCHES = [Batch(key=f"b{n}", items=[3 * n, 3 * n + 1, 3 * n + 2]) for n in range(4)]


class Work:
    """A fake batch computation that counts calls and can fail on a chosen batch."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[dict[str, Any]]:
        if items[0] == self.fail_on:
            raise RuntimeError("simulated crash")
        self.calls.append(items)
        return [{"key": f"row{i}", "text": f"answer {i} é", "score": i / 7} for i in items]


EXPECTED = [{"key": f"row{i}", "text": f"answer {i} é", "score": i / 7} for i in range(12)]


def new_log(tmp_path: Path, material: Any = MATERIAL) -> ResumeLog:
    return ResumeLog(tmp_path / "resume", "generate", material)


def test_first_run_computes_every_batch(tmp_path: Path) -> None:
    work = Work()
    results, count = run_resumable(BATCHES, work, new_log(tmp_path), "test")
    assert results == EXPECTED
    assert count == RunCount(batches_run=4, batches_resumed=0)
    assert work.calls == [b.items for b in BATCHES]


def test_second_run_with_the_same_log_computes_nothing(tmp_path: Path) -> None:
    first, _ = run_resumable(BATCHES, Work(), new_log(tmp_path), "test")
    work = Work()
    second, count = run_resumable(BATCHES, work, new_log(tmp_path), "test")
    assert work.calls == []
    assert count == RunCount(batches_run=0, batches_resumed=len(BATCHES))
    assert second == first == EXPECTED


def test_prepare_runs_once_before_the_first_batch_that_runs(tmp_path: Path) -> None:
    events: list[object] = []
    work = Work()

    def recording_work(items: list[int]) -> list[dict[str, Any]]:
        events.append(items[0])
        return work(items)

    run_resumable(BATCHES, recording_work, new_log(tmp_path), "test", lambda: events.append("p"))
    assert events == ["p", 0, 3, 6, 9]


def test_prepare_runs_when_a_crashed_run_resumes(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_resumable(BATCHES, Work(fail_on=BATCHES[2].items[0]), new_log(tmp_path), "test")
    prepared: list[bool] = []
    run_resumable(BATCHES, Work(), new_log(tmp_path), "test", lambda: prepared.append(True))
    assert prepared == [True]


def test_prepare_is_skipped_when_every_batch_resumes(tmp_path: Path) -> None:
    """A fully resumed stage has no batch left whose result the prepared state could change."""
    run_resumable(BATCHES, Work(), new_log(tmp_path), "test")
    prepared: list[bool] = []
    results, _ = run_resumable(
        BATCHES, Work(), new_log(tmp_path), "test", lambda: prepared.append(True)
    )
    assert prepared == []
    assert results == EXPECTED


def test_a_crashed_run_resumes_only_the_missing_batches(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_resumable(BATCHES, Work(fail_on=BATCHES[2].items[0]), new_log(tmp_path), "test")
    work = Work()
    results, count = run_resumable(BATCHES, work, new_log(tmp_path), "test")
    assert work.calls == [BATCHES[2].items, BATCHES[3].items]
    assert count == RunCount(batches_run=2, batches_resumed=2)
    assert results == EXPECTED


def test_a_log_for_other_inputs_is_not_reused(tmp_path: Path) -> None:
    run_resumable(BATCHES, Work(), new_log(tmp_path), "test")
    work = Work()
    other = new_log(tmp_path, MATERIAL | {"seed": 43})
    _, count = run_resumable(BATCHES, work, other, "test")
    assert count == RunCount(batches_run=4, batches_resumed=0)
    assert len(work.calls) == 4


def test_a_log_written_by_other_library_code_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_resumable(BATCHES, Work(), new_log(tmp_path), "test")
    monkeypatch.setattr(resume, "library_fingerprint", lambda: "edited-code")
    work = Work()
    _, count = run_resumable(BATCHES, work, new_log(tmp_path), "test")
    assert count == RunCount(batches_run=4, batches_resumed=0)


def test_source_fingerprint_changes_with_any_module_and_ignores_other_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("y = 2\n", encoding="utf-8")
    before = source_fingerprint(tmp_path)
    (tmp_path / "notes.txt").write_text("not code", encoding="utf-8")
    assert source_fingerprint(tmp_path) == before
    (tmp_path / "b.py").write_text("y = 3\n", encoding="utf-8")
    edited = source_fingerprint(tmp_path)
    (tmp_path / "c.py").write_text("", encoding="utf-8")
    assert len({before, edited, source_fingerprint(tmp_path)}) == 3


def test_discard_removes_the_log(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    run_resumable(BATCHES, Work(), log, "test")
    assert log.path.is_file()
    log.discard()
    assert not log.path.exists()
    log.discard()  # discarding twice is fine


def test_resumable_discards_the_log_when_the_block_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINICC_CACHE_DIR", str(tmp_path / "cache"))
    with resumable("generate", MATERIAL) as log:
        run_resumable(BATCHES, Work(), log, "test")
        assert log.path.is_file()
        assert log.path.is_relative_to(tmp_path / "cache")
    assert not log.path.exists()


def test_resumable_keeps_the_log_when_the_block_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINICC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OSError, match="disk full"), resumable("generate", MATERIAL) as log:
        run_resumable(BATCHES, Work(), log, "test")
        raise OSError("disk full")  # e.g. writing the outputs failed
    assert log.path.is_file()
    with resumable("generate", MATERIAL) as again:
        work = Work()
        _, count = run_resumable(BATCHES, work, again, "test")
    assert (count.batches_resumed, work.calls) == (len(BATCHES), [])


CHANGES = {
    "seed": lambda m: m | {"seed": 43},
    "model": lambda m: m | {"model": "smollm2-135m-instruct@def456"},
    "param value": lambda m: m | {"params": m["params"] | {"temperature": 0.80001}},
    "param added": lambda m: m | {"params": m["params"] | {"max_new_tokens": 64}},
    "prompt text": lambda m: m | {"prompts": [m["prompts"][0], {"id": "p2", "prompt": "How!"}]},
    "prompt order": lambda m: m | {"prompts": m["prompts"][::-1]},
    "prompt added": lambda m: m | {"prompts": [*m["prompts"], {"id": "p3", "prompt": "x"}]},
}


@pytest.mark.parametrize("change", CHANGES)
def test_fingerprint_differs_when_any_input_differs(change: str) -> None:
    assert fingerprint(CHANGES[change](MATERIAL)) != fingerprint(MATERIAL)


def test_fingerprint_tells_a_bool_from_an_int() -> None:
    """Python has True == 1, but a flag and a count are different inputs."""
    assert fingerprint({"explain": True}) != fingerprint({"explain": 1})
    assert fingerprint({"explain": False}) != fingerprint({"explain": 0})


def test_fingerprint_is_stable_and_ignores_key_order() -> None:
    reordered = {key: MATERIAL[key] for key in reversed(list(MATERIAL))}
    assert fingerprint(reordered) == fingerprint(MATERIAL)
    assert fingerprint(json.loads(json.dumps(MATERIAL))) == fingerprint(MATERIAL)
    assert ResumeLog(Path("x"), "s", reordered).path == ResumeLog(Path("x"), "s", MATERIAL).path


def test_torn_final_line_is_dropped_and_cut_off(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    log.append("b0", [{"text": "one"}])
    log.append("b1", [{"text": "two"}])
    intact = log.path.read_bytes()
    with log.path.open("ab") as handle:  # a kill -9 in the middle of the next append
        handle.write(b'{"unit": "b2", "result": [{"text": "thr')
    assert log.load() == {"b0": [{"text": "one"}], "b1": [{"text": "two"}]}
    assert log.path.read_bytes() == intact
    log.append("b2", [{"text": "three"}])
    lines = log.path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    assert [json.loads(line)["unit"] for line in lines[:-1]] == ["b0", "b1", "b2"]
    assert list(log.load()) == ["b0", "b1", "b2"]


def test_torn_batch_is_recomputed(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    run_resumable(BATCHES[:2], Work(), log, "test")
    with log.path.open("ab") as handle:
        handle.write(b'{"unit": "b2", "res')
    work = Work()
    results, count = run_resumable(BATCHES, work, log, "test")
    assert work.calls == [BATCHES[2].items, BATCHES[3].items]
    assert count == RunCount(batches_run=2, batches_resumed=2)
    assert results == EXPECTED
    assert len(log.load()) == len(BATCHES)
