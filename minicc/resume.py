"""Crash-safe progress for long stages, kept outside DVC's outputs.

DVC deletes a stage's outputs before running it, so finished work is logged in a side cache
instead: one JSON line per finished unit (a batch), fsynced before the stage moves on. The log's
name is a hash of everything that changes results (the inputs and the library's code), so a
log is only ever reused for the exact same inputs and code. A `kill -9` can tear at most the
last line, which is then ignored and redone.
"""

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from minicc.cache import cache_root

T = TypeVar("T")


def fingerprint(material: Any) -> str:
    """Stable hash of JSON-serialisable inputs (params, file contents, model ids)."""
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def source_fingerprint(folder: Path) -> str:
    """Hash of the names and contents of every `*.py` file in `folder`."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


@functools.cache
def library_fingerprint() -> str:
    """Hash of the library's source (every `minicc/*.py`).

    Part of every log's name: a stage killed mid-run and rerun after a code change (a `git
    pull`, an edited feature) must not mix results computed by the old code into the new run.
    """
    return source_fingerprint(Path(__file__).parent)


class ResumeLog:
    """Append-only log of finished units for one stage, one set of inputs and one version of
    the library."""

    def __init__(self, directory: Path, stage: str, material: Any) -> None:
        name = fingerprint({"inputs": material, "library": library_fingerprint()})
        self.path = directory / f"{stage}-{name}.jsonl"

    def load(self) -> dict[str, Any]:
        """Finished units by key.

        A final line without its newline was torn by a crash mid-write: it is cut off the file
        (so later appends start on a fresh line) and its unit is redone.
        """
        if not self.path.is_file():
            return {}
        finished: dict[str, Any] = {}
        good_bytes = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                entry = json.loads(raw)
                finished[entry["unit"]] = entry["result"]
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            os.truncate(self.path, good_bytes)
        return finished

    def append(self, unit: str, result: Any) -> None:
        """Record one finished unit durably before any later work starts."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"unit": unit, "result": result}, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def discard(self) -> None:
        """Forget the progress once the stage's outputs are safely written."""
        self.path.unlink(missing_ok=True)


@contextmanager
def resumable(stage: str, material: Any) -> Iterator[ResumeLog]:
    """A resume log that is discarded only when the block (work and output writing) succeeds."""
    log = ResumeLog(cache_root() / "resume", stage, material)
    yield log
    log.discard()


@dataclass(frozen=True)
class Batch(Generic[T]):
    key: str
    """Names the unit in the resume log; must be stable across runs with the same inputs."""
    items: list[T]


@dataclass(frozen=True)
class RunCount:
    batches_run: int
    batches_resumed: int


def run_resumable(
    batches: list[Batch[T]],
    work: Callable[[list[T]], list[Any]],
    log: ResumeLog,
    description: str,
    prepare: Callable[[], None] | None = None,
) -> tuple[list[Any], RunCount]:
    """Run `work` on every batch not already in `log`, logging each result as it finishes.

    `prepare` runs once, before the first batch that was not resumed: work that every batch's
    result depends on and that must not depend on where a resumed run starts (the probe's
    request states), so a run that resumes every batch skips it.

    Returns all results in batch order (resumed and new alike) and how many batches ran. The
    progress bar counts items, starting from those already finished.
    """
    finished = log.load()
    if prepare is not None and any(batch.key not in finished for batch in batches):
        prepare()
    resumed = sum(1 for batch in batches if batch.key in finished)
    total_items = sum(len(batch.items) for batch in batches)
    done_items = sum(len(batch.items) for batch in batches if batch.key in finished)
    results: list[Any] = []
    with tqdm(
        total=total_items,
        initial=done_items,
        desc=description,
        unit="row",
        file=sys.stderr,
        dynamic_ncols=True,
    ) as progress:
        for batch in batches:
            if batch.key not in finished:
                finished[batch.key] = work(batch.items)
                log.append(batch.key, finished[batch.key])
                progress.update(len(batch.items))
            results.extend(finished[batch.key])
    return results, RunCount(batches_run=len(batches) - resumed, batches_resumed=resumed)
