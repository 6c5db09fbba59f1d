"""Prompt sets from a local JSONL, CSV or Parquet file or a Hugging Face dataset, via `datasets`.

A source (`prompts.train` or `prompts.eval` in params.yaml) names where the rows are and which
columns hold the prompt, its id, its category and its attribution. Every row becomes a
`minicc.records.Prompt`; anything that cannot (a missing column, an empty prompt, a category
outside the three) is one error naming the source and the column or row.
"""

import random
from collections import deque
from collections.abc import Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any, get_args

import datasets
from datasets.exceptions import DatasetNotFoundError

from minicc.errors import UserError
from minicc.params import Category, PromptSourceParams
from minicc.records import Prompt
from minicc.seeding import derive_seed
from minicc.text import normalise

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder that reads each kind of local file."""
CATEGORIES: tuple[Category, ...] = get_args(Category)
_PARQUET_MAGIC = b"PAR1"


def read_source(spec: PromptSourceParams, default: Path, where: str) -> list[Prompt]:
    """Every row of the source as a Prompt, in the source's order; `default` when path is null.

    `where` is the params key of the source (`prompts.train`), for the error messages.
    """
    name = spec.path or str(default)
    local = Path(name).expanduser()
    if local.suffix.lower() in LOCAL_BUILDERS or local.exists():
        rows = _load_local(local, spec, where)
    else:
        rows = _load_hub(name, spec, where)
    if len(rows) == 0:
        raise _empty(name, spec.split, where)
    return _to_prompts(rows, spec, name, where)


def _empty(name: str | Path, split: str, where: str) -> UserError:
    return UserError(f"prompt source {name} ({where}): split {split!r} has no rows")


# What `datasets` raises when a split has no rows to slice (a CSV with only its header).
_NO_DATA = "corresponds to no data"


def _load_local(path: Path, spec: PromptSourceParams, where: str) -> datasets.Dataset:
    if not path.is_file():
        raise UserError(f"prompt source {path} ({where}.path): file not found")
    builder = LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UserError(
            f"prompt source {path} ({where}.path): expected a .jsonl, .csv or .parquet file "
            "or a Hugging Face dataset id"
        )
    if spec.config is not None or spec.revision is not None:
        raise UserError(
            f"prompt source {path}: {where}.config and {where}.revision are for Hub datasets "
            "only; set them to null for a local file"
        )
    if spec.split != "train":
        raise UserError(
            f"prompt source {path}: a local file has one split, 'train'; got {spec.split!r}"
        )
    if builder == "parquet" and not _looks_like_parquet(path):
        raise UserError(
            f"prompt source {path}: not a Parquet file (no PAR1 marker at its start and end); "
            "write it with pandas' to_parquet or give the file its real extension"
        )
    if path.stat().st_size == 0:
        raise _empty(path, spec.split, where)
    try:
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        if _NO_DATA in str(error):
            raise _empty(path, spec.split, where) from None
        # Malformed JSON or CSV: datasets names the cause in the error's chain.
        cause = error.__cause__ or error
        raise UserError(f"prompt source {path}: cannot be read as {builder} ({cause})") from None
    return loaded


def _looks_like_parquet(path: Path) -> bool:
    """A Parquet file starts and ends with the 4 bytes PAR1."""
    if path.stat().st_size < 2 * len(_PARQUET_MAGIC):
        return False
    with path.open("rb") as handle:
        head = handle.read(len(_PARQUET_MAGIC))
        handle.seek(-len(_PARQUET_MAGIC), 2)
        return head == _PARQUET_MAGIC == handle.read(len(_PARQUET_MAGIC))


def _load_hub(dataset_id: str, spec: PromptSourceParams, where: str) -> datasets.Dataset:
    described = f"{dataset_id} (config {spec.config}, split {spec.split}, revision {spec.revision})"
    try:
        loaded = datasets.load_dataset(
            dataset_id, spec.config, split=spec.split, revision=spec.revision
        )
    except (ConnectionError, DatasetNotFoundError) as error:
        offline = " (HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
        raise UserError(
            f"prompt source {described} ({where}.path): not in the local datasets cache "
            f"({datasets.config.HF_DATASETS_CACHE}) and the Hub cannot be reached{offline}. "
            f"Load it once on a connected machine (datasets.load_dataset({dataset_id!r}, "
            f"{spec.config!r}, split={spec.split!r}, revision={spec.revision!r})) and copy "
            "that cache folder here (HF_DATASETS_CACHE), or export the rows to a .jsonl, .csv "
            f"or .parquet file and set {where}.path to it. ({error})"
        ) from None
    except ValueError as error:
        if _NO_DATA in str(error):
            raise _empty(described, spec.split, where) from None
        # An unknown split or config: datasets lists the ones that exist.
        raise UserError(f"prompt source {described} ({where}): {error}") from None
    if not isinstance(loaded, datasets.Dataset):
        raise UserError(f"prompt source {described} ({where}.split): not a single split")
    return loaded


def _to_prompts(
    rows: datasets.Dataset, spec: PromptSourceParams, name: str, where: str
) -> list[Prompt]:
    columns = list(rows.column_names)
    if spec.prompt_column not in columns:
        raise UserError(
            f"prompt source {name}: no prompt column {spec.prompt_column!r} "
            f"({where}.prompt_column); its columns: {', '.join(columns)}"
        )
    for key in ("id_column", "category_column", "source_column"):
        column = getattr(spec, key)
        if column is not None and column not in columns:
            raise UserError(
                f"prompt source {name}: unknown column {column!r} in {where}.{key}; its "
                f"columns: {', '.join(columns)} (or null)"
            )
    short = Path(name).stem if Path(name).suffix else name.rsplit("/", 1)[-1]
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, row in enumerate(rows):
        prompts.append(_prompt(row, number, spec, name, short))
        if prompts[-1].id in seen:
            raise UserError(
                f"prompt source {name}: row {number}: duplicate id {prompts[-1].id!r} in "
                f"column {spec.id_column!r}"
            )
        seen.add(prompts[-1].id)
    return prompts


def _prompt(
    row: dict[str, Any], number: int, spec: PromptSourceParams, name: str, short: str
) -> Prompt:
    """One row as a Prompt; `number` counts the data rows from 0."""
    text = row[spec.prompt_column]
    if not isinstance(text, str) or not text.strip():
        raise UserError(
            f"prompt source {name}: row {number}: column {spec.prompt_column!r} is empty or "
            f"not text ({text!r})"
        )
    category = spec.category if spec.category_column is None else row[spec.category_column]
    if category not in CATEGORIES:
        raise UserError(
            f"prompt source {name}: row {number}: column {spec.category_column!r} holds "
            f"{category!r}; allowed: {', '.join(CATEGORIES)}"
        )
    identifier = f"{short}-{number:05d}" if spec.id_column is None else row[spec.id_column]
    source = f"{short}:{number}" if spec.source_column is None else row[spec.source_column]
    for column, value in ((spec.id_column, identifier), (spec.source_column, source)):
        if value is None or not str(value).strip():
            raise UserError(f"prompt source {name}: row {number}: column {column!r} is empty")
    return Prompt(str(identifier), text.strip(), category, str(source))


def cap_per_category(
    prompts: list[Prompt], limit: int | Mapping[Category, int | None] | None, seed: int, key: str
) -> list[Prompt]:
    """At most `limit` prompts per category (a mapping: each category's own; None: all of
    them), sorted by category and id.

    A category's prompts are shuffled by the seed (and `key`, so train and eval draw apart),
    then taken one source at a time in turn (`advbench`, `gptfuzz`, ...: the part of `source`
    before the colon), so that the largest source does not crowd out the others. A category's
    draw depends on its own cap only, and a larger cap takes the smaller cap's prompts and more.
    """
    kept: list[Prompt] = []
    for category in CATEGORIES:
        rows = [p for p in prompts if p.category == category]
        cap = limit.get(category) if isinstance(limit, Mapping) else limit
        if cap is None:
            kept += rows
            continue
        random.Random(derive_seed(seed, "prompts", key, category)).shuffle(rows)
        by_source: dict[str, deque[Prompt]] = {}
        for prompt in rows:
            by_source.setdefault(prompt.source.split(":", 1)[0], deque()).append(prompt)
        queues = [by_source[source] for source in sorted(by_source)]
        taken: list[Prompt] = []
        while len(taken) < cap and any(queues):
            for queue in queues:
                if queue and len(taken) < cap:
                    taken.append(queue.popleft())
        kept += taken
    return sorted(kept, key=attrgetter("category", "id"))


def check_eval_set(prompts: list[Prompt], name: str) -> None:
    """An eval set measures refusal and over-refusal: it needs harmful and harmless prompts."""
    harmful = sum(p.category == "adversarial" for p in prompts)
    if harmful == 0 or harmful == len(prompts):
        missing = "harmful (adversarial)" if harmful == 0 else "harmless (borderline, cooperative)"
        raise UserError(
            f"eval prompts {name}: no {missing} prompts; the eval set must hold both harmful and "
            "harmless prompts (prompts.eval)"
        )


def check_disjoint(train: list[Prompt], evaluation: list[Prompt], names: tuple[str, str]) -> None:
    """A prompt in both sets would be evaluated on what the model trained on."""
    shared = {normalise(p.prompt) for p in train} & {normalise(p.prompt) for p in evaluation}
    if shared:
        example = next(p.id for p in evaluation if normalise(p.prompt) in shared)
        raise UserError(
            f"prompt sources {names[0]} and {names[1]} share {len(shared)} prompt(s) after "
            f"normalising (e.g. eval id {example!r}); the eval prompts must be held out"
        )
