"""Faults at the stage level: an output that cannot be written, training killed with SIGKILL.

The stage scripts run as subprocesses, as DVC runs them. Tests run as root, where a read-only
folder does not stop writes, so an unwritable output is one whose parent is a regular file, or
a path that is an existing directory.

Training is killed at exact points rather than after a delay: `tests/pause_stage.py` runs the
unchanged `stages/train_lora.py` and freezes it in the middle of the training loop or just
before a chosen rename, and the test sends SIGKILL there.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeModel, make_critique, models_params, train_params, write_params

from minicc.errors import UserError
from minicc.jsonl import write_records
from minicc.lora import COMPLETE_MARKER, adapter_digest, apply_adapter
from minicc.models import load_model
from minicc.params import load_params
from minicc.records import Critique
from minicc.selection import select
from minicc.sft import SftExample

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"
PAUSE = Path(__file__).resolve().parent / "pause_stage.py"


def stage_env(cache: Path) -> dict[str, str]:
    """Offline, a private cache, one OpenMP thread (the machine is small and shared)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HF_HUB_OFFLINE="1", MINICC_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    return env


def run_stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=stage_env(cwd / "cache"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` with its bytes (None for a folder)."""
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in sorted(directory.rglob("*"))
    }


# --- an output that cannot be written -----------------------------------------------------------


def critique(prompt_id: str, k: int, score: float) -> Critique:
    return make_critique(
        f"{prompt_id}/{k}",
        score,
        prompt=f"Question {prompt_id}?",
        response=f"Answer {k} to {prompt_id}.",
        probabilities=[0.2] * 5,
        digit_mass=0.9,
    )


@dataclass(frozen=True)
class OutputCase:
    stage: str
    script: str
    outputs: tuple[str, ...]
    """The stage's output options, in the order it writes them."""
    blocked: str
    """The option whose path cannot be written."""
    how: str
    """`parent-is-file` or `is-directory`."""

    @property
    def id(self) -> str:
        return f"{self.stage}-{self.blocked.removeprefix('--')}-{self.how}"


SELECT = ("select", "select_samples.py", ("--out", "--pairs-out"))
SUMMARIZE = ("summarize", "summarize.py", ("--metrics-out", "--detail-out", "--histogram-out"))


def output_case(stage: tuple[str, str, tuple[str, ...]], blocked: str, how: str) -> Any:
    case = OutputCase(*stage, blocked=blocked, how=how)
    return pytest.param(case, id=case.id)


@pytest.mark.parametrize(
    "case",
    [
        output_case(stage, blocked, how)
        for stage in (SELECT, SUMMARIZE)
        for blocked in stage[2]
        for how in ("parent-is-file", "is-directory")
    ],
)
def test_unwritable_output_fails_in_one_line_and_keeps_previous_outputs(
    case: OutputCase, tmp_path: Path
) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", {}))
    critiques = [critique(f"p{i}", k, s) for i in range(3) for k, s in enumerate((4.5, 1.5))]
    write_records(tmp_path / "critiques.jsonl", critiques)
    selected, _ = select(critiques, params.select)
    write_records(tmp_path / "selected.jsonl", selected)

    # Every output holds a previous run's result; the blocked one cannot be replaced.
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    paths: dict[str, Path] = {}
    for option in case.outputs:
        path = outputs / option.removeprefix("--")
        if option != case.blocked:
            path.write_text(f"previous {option}\n", encoding="utf-8")
        elif case.how == "is-directory":
            path.mkdir()
            (path / "previous.txt").write_text("previous run\n", encoding="utf-8")
        else:
            path.write_text("a file where a folder should be\n", encoding="utf-8")
            path = path / "output"
        paths[option] = path
    before = snapshot(outputs)

    inputs = {
        "select": ["--critiques", "critiques.jsonl", "--params", "params.yaml"],
        "summarize": ["--critiques", "critiques.jsonl", "--selected", "selected.jsonl"],
    }[case.stage]
    args = [str(STAGES / case.script), *inputs]
    for option, path in paths.items():
        args += [option, str(path)]
    done = run_stage(args, tmp_path)

    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{case.stage}: error: {paths[case.blocked]}: cannot write")
    assert done.stdout == "", "no success summary for a failed stage"
    after = snapshot(outputs)
    assert sorted(after) == sorted(before), "no temporary or half-written file is left"
    blocked = {name for name in before if name.startswith(case.blocked.removeprefix("--"))}
    assert {name: after[name] for name in blocked} == {name: before[name] for name in blocked}
    # All outputs are staged before any is renamed into place (regression: they used to be
    # renamed one by one, so a failure on the second left the first holding the failed run).
    assert after == before, "a failed stage must leave every previous output as it was"


# --- training killed with SIGKILL ---------------------------------------------------------------

TRAIN = dataclasses.asdict(train_params(epochs=2))
TRAIN_EXAMPLES = 8
"""4 batches per epoch, 8 backward passes in all: a kill after the 2nd is mid-training."""

# Kill points: inside the training loop; while the adapter is written into `<out>.partial/`
# (weights and tokenizer saved, config and marker not yet); just before `<out>.partial/` is
# renamed to `<out>` (the old adapter, if any, already deleted).
TRAINING = "backward:2"
WRITING = "replace:train_config.json"
RENAMING = "replace:adapter"


def sft_example(i: int) -> SftExample:
    return SftExample(
        prompt_id=f"p{i}",
        category="cooperative",
        messages=[
            {"role": "user", "content": f"How do I boil egg number {i}?"},
            {"role": "assistant", "content": "Put the egg in boiling water for nine minutes."},
        ],
        score=4.0,
        candidate_id=f"p{i}/0",
        finish_reason="eos",
        trimmed=None,
        ends_turn=True,
    )


@dataclass(frozen=True)
class TrainRun:
    work: Path
    params: Path
    data: Path
    """Folder of train.jsonl and val.jsonl."""

    @property
    def out(self) -> Path:
        return self.work / "adapter"

    @property
    def partial(self) -> Path:
        return self.work / "adapter.partial"

    @property
    def metrics(self) -> Path:
        return self.work / "train.json"

    @property
    def loss(self) -> Path:
        return self.work / "train_loss.csv"

    def command(self) -> list[str]:
        data = self.data
        return [
            str(STAGES / "train_lora.py"),
            "--train",
            str(data / "train.jsonl"),
            "--val",
            str(data / "val.jsonl"),
            "--out",
            str(self.out),
            "--metrics-out",
            str(self.metrics),
            "--loss-out",
            str(self.loss),
            "--params",
            str(self.params),
        ]

    def train(self) -> None:
        done = run_stage(self.command(), self.work)
        assert done.returncode == 0, f"train_lora failed:\n{done.stdout}\n{done.stderr}"

    def kill_at(self, point: str, timeout: float = 240) -> None:
        """Run training until it reaches `point`, then SIGKILL it there."""
        flag = self.work / "paused"
        process = subprocess.Popen(
            [sys.executable, str(PAUSE), str(flag), point, *self.command()],
            cwd=self.work,
            env=stage_env(self.work / "cache"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while not flag.exists():
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"train_lora ended before reaching {point}:\n{out}\n{err}")
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                pytest.fail(f"train_lora did not reach {point} within {timeout} s")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
        flag.unlink()


@dataclass(frozen=True)
class Training:
    root: Path
    model: Path
    params: Path
    """The training to interrupt."""
    other_params: Path
    """Another learning rate: the "old" adapter that a retrain replaces."""
    reference: Path
    """Work folder of an uninterrupted run with `params`."""
    old: Path
    """Work folder of an uninterrupted run with `other_params`."""

    def run(self, work: Path, params: Path | None = None) -> TrainRun:
        work.mkdir(exist_ok=True)
        return TrainRun(work, params or self.params, self.root)


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory, make_tiny_model: MakeModel) -> Training:
    """SFT data, params for a tiny llama, and two uninterrupted runs to compare with."""
    root = tmp_path_factory.mktemp("train")
    examples = [sft_example(i) for i in range(TRAIN_EXAMPLES + 2)]
    write_records(root / "train.jsonl", examples[:TRAIN_EXAMPLES])
    write_records(root / "val.jsonl", examples[TRAIN_EXAMPLES:])
    model = make_tiny_model("llama")
    models = {"generator": str(model), "device": "cpu"}
    params = write_params(root / "params.yaml", {"models": models, "train": TRAIN})
    other = write_params(root / "other.yaml", {"models": models, "train": {**TRAIN, "lr": 0.02}})
    setup = Training(root, model, params, other, root / "reference", root / "old")
    setup.run(setup.reference).train()
    setup.run(setup.old, other).train()
    return setup


def adapter_files(adapter: Path) -> dict[str, Any]:
    """The adapter's files, byte for byte.

    Regression: peft writes `target_modules` in set order, which changes with Python's hash
    seed from one process to the next; `save_adapter` now sorts it, so identical runs give
    byte-identical adapters (and DVC does not rerun evaluation).
    """
    return dict(snapshot(adapter))


def assert_complete(adapter: Path, expected: Path, model: Path) -> None:
    """`adapter` is marked complete, loads, and is file for file the adapter `expected`."""
    assert (adapter / COMPLETE_MARKER).read_text(encoding="utf-8") == adapter_digest(adapter) + "\n"
    assert adapter_files(adapter) == adapter_files(expected)
    merged = apply_adapter(load_model(str(model), models_params()), adapter)
    assert merged.model_id.endswith(f"+lora:{adapter_digest(adapter)}")


def test_killed_training_leaves_no_adapter_and_rerun_equals_an_uninterrupted_run(
    training: Training, tmp_path: Path
) -> None:
    run = training.run(tmp_path)
    run.kill_at(TRAINING)

    assert not run.out.exists() and not run.partial.exists(), sorted(tmp_path.iterdir())
    assert not run.metrics.exists() and not run.loss.exists()
    with pytest.raises(UserError, match=COMPLETE_MARKER):
        apply_adapter(load_model(str(training.model), models_params()), run.out)

    run.train()
    assert not run.partial.exists()
    reference = training.reference
    assert_complete(run.out, reference / "adapter", training.model)
    assert run.loss.read_bytes() == (reference / "train_loss.csv").read_bytes()
    metrics = json.loads(run.metrics.read_text(encoding="utf-8"))
    expected = json.loads((reference / "train.json").read_text(encoding="utf-8"))
    assert {**metrics, "wall_time_s": 0} == {**expected, "wall_time_s": 0}


@pytest.mark.parametrize(
    "point", [TRAINING, WRITING, RENAMING], ids=["training", "writing", "renaming"]
)
def test_killed_retrain_never_mixes_with_the_old_adapter(
    point: str, training: Training, tmp_path: Path
) -> None:
    run = training.run(tmp_path)
    for name in ("adapter", "train.json", "train_loss.csv"):
        source = training.old / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, run.work / name)
    old = snapshot(run.work)

    run.kill_at(point)

    if point == RENAMING:
        # The old adapter is deleted just before the complete new one is renamed into place:
        # for that instant there is no adapter at all (never a mixed one), and the new one waits,
        # complete, in `.partial`.
        assert not run.out.exists()
        assert_complete(run.partial, training.reference / "adapter", training.model)
    else:
        assert snapshot(run.out) == {
            name.removeprefix("adapter/"): data
            for name, data in old.items()
            if name.startswith("adapter/")
        }, "the old adapter is untouched until the new one is complete"
    # Metrics and losses are written after the adapter: still the old run's.
    assert run.metrics.read_bytes() == old["train.json"]
    assert run.loss.read_bytes() == old["train_loss.csv"]

    if point == WRITING:
        assert not (run.partial / COMPLETE_MARKER).exists()

    run.train()
    assert not run.partial.exists(), "the rerun clears the killed run's `.partial` folder"
    assert_complete(run.out, training.reference / "adapter", training.model)


def test_adapter_weights_depend_on_the_params(training: Training) -> None:
    """The comparisons above could not tell two runs apart if every run wrote the same bytes."""
    assert adapter_digest(training.reference / "adapter") != adapter_digest(
        training.old / "adapter"
    )
