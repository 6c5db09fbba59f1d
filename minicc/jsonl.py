"""Typed JSONL reading and atomic writing: one record type per artifact row.

Reading reports the file and line of anything wrong (bad UTF-8, bad JSON, a line that is not an
object, a missing, unknown or mistyped field). Writing goes to a temporary file that is renamed
into place, so a declared output path never holds a half-written file.
"""

import contextlib
import dataclasses
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from minicc.errors import UserError
from minicc.typecheck import build

T = TypeVar("T")

_BOM = "\ufeff"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error, not "the last one wins"."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _unencodable_field(value: dict[str, Any]) -> str | None:
    """The first top-level field whose text cannot be written back as UTF-8, if any."""
    for key, item in value.items():
        try:
            json.dumps(item, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return key
    return None


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    Handling of awkward but harmless input is deliberate and documented in the README: a UTF-8
    byte-order mark on the first line and CRLF line endings are accepted; blank lines are skipped.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(
                    f"{path}:{number}: not valid UTF-8 (byte {error.start}); save the file as UTF-8"
                ) from None
            if number == 1:
                line = line.removeprefix(_BOM)
            if not line.strip():
                continue
            try:
                value = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})"
                ) from None
            except _DuplicateKey as error:
                raise UserError(f"{path}:{number}: duplicate key {error.args[0]!r}") from None
            if not isinstance(value, dict):
                raise UserError(
                    f"{path}:{number}: expected a JSON object, got {type(value).__name__}"
                )
            broken = _unencodable_field(value)
            if broken is not None:
                raise UserError(
                    f"{path}:{number}: field {broken!r} holds a lone surrogate escape "
                    "(e.g. \\ud83d), which is not text; write the full character"
                )
            yield number, value


def read_numbered_records(path: Path, record_type: type[T]) -> list[tuple[int, T]]:
    """Read every line of `path` as a `record_type` dataclass, strictly, with its line number."""
    records = []
    for number, value in iter_json_objects(path):
        try:
            records.append((number, build(record_type, value, f"{path}:{number}")))
        except ValueError as error:
            raise UserError(str(error)) from None
    return records


def read_records(path: Path, record_type: type[T]) -> list[T]:
    """Read every line of `path` as a `record_type` dataclass, strictly."""
    return [record for _, record in read_numbered_records(path, record_type)]


def record_to_json(record: Any) -> str:
    """One JSONL line for a dataclass record: stable key order, UTF-8 kept readable."""
    return json.dumps(dataclasses.asdict(record), ensure_ascii=False)


def atomic_write_files(texts: Mapping[Path, str]) -> None:
    """Write several output files so that a failure leaves every one of them as it was.

    Each text first goes to a temporary file beside its path (written and fsynced); only when
    all of them are written are they renamed into place. Writing one file at a time would let a
    failure on the second output leave the first holding the failed run's result.
    """
    staged: list[tuple[Path, Path]] = []
    current = next(iter(texts), Path())
    try:
        for current, text in texts.items():
            temporary = current.with_name(current.name + ".tmp")
            current.parent.mkdir(parents=True, exist_ok=True)
            if current.is_dir():
                # Caught here, before any rename, rather than by the rename below.
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            staged.append((temporary, current))
            with temporary.open("w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for temporary, current in staged:
            os.replace(temporary, current)
    except (OSError, UnicodeEncodeError) as error:
        for temporary, _ in staged:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) else "text is not valid Unicode"
        raise UserError(
            f"{current}: cannot write ({reason}); check that the folder exists and is writable"
        ) from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename.

    Either the old file or the complete new one exists at every instant; a failure leaves the
    old file untouched and removes the temporary file.
    """
    atomic_write_files({path: text})


def records_text(records: Iterable[Any]) -> str:
    """Dataclass records as JSONL text, one per line."""
    return "".join(record_to_json(r) + "\n" for r in records)


def json_text(value: Any) -> str:
    """A JSON document (metrics, manifests), indented for people to read."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def write_records(path: Path, records: Iterable[Any]) -> None:
    """Atomically write dataclass records as JSONL, one per line."""
    atomic_write_text(path, records_text(records))


def write_json(path: Path, value: Any) -> None:
    """Atomically write a JSON document (metrics, manifests), indented for people to read."""
    atomic_write_text(path, json_text(value))


def publish_directory(destination: Path, marker: str, build: Callable[[Path], str]) -> None:
    """Write a directory output (a model, an adapter) so that it is whole or absent.

    `build` fills an empty sibling `.partial` directory and returns the text of the `marker`
    file, which is written last: a directory without its marker is an interrupted write, to be
    redone. The finished directory then replaces `destination`, so a crash never leaves one
    that mixes two runs.
    """
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    marker_text = build(staging)
    (staging / marker).write_text(marker_text + "\n", encoding="utf-8")
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)
