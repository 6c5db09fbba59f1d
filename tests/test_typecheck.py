"""`build`: dataclasses from plain values, nested sections checked at every depth."""

from dataclasses import dataclass
from typing import Any

import pytest

from minicc.typecheck import build


@dataclass(frozen=True)
class Column:
    name: str
    width: float


@dataclass(frozen=True)
class Source:
    path: str
    column: Column
    fallback: Column | None


@dataclass(frozen=True)
class Settings:
    seed: int
    train: Source
    heads: dict[str, Column]


@dataclass(frozen=True)
class Ranged:
    size: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"ranged.size must be >= 1, got {self.size}")


def raw() -> dict[str, Any]:
    column = {"name": "prompt", "width": 2}
    return {
        "seed": 1,
        "train": {"path": "a.csv", "column": dict(column), "fallback": None},
        "heads": {"harm": dict(column)},
    }


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as caught:
        build(Settings, data, "params.yaml")
    return str(caught.value)


def test_nested_mappings_become_their_dataclasses() -> None:
    settings = build(Settings, raw(), "params.yaml")
    assert settings.train == Source("a.csv", Column("prompt", 2.0), None)
    assert settings.heads == {"harm": Column("prompt", 2.0)}
    assert isinstance(settings.train.column.width, float)  # an int is read as the float it means
    data = raw()
    data["train"]["fallback"] = {"name": "text", "width": 1.5}
    assert build(Settings, data, "params.yaml").train.fallback == Column("text", 1.5)


def test_an_unknown_key_two_levels_down_names_its_dotted_path() -> None:
    data = raw()
    data["train"]["column"]["colour"] = "red"
    assert refused(data) == (
        "params.yaml: train.column: unknown key 'colour'; allowed keys: name, width"
    )


def test_a_missing_nested_key_names_its_dotted_path() -> None:
    data = raw()
    del data["train"]["fallback"]
    assert refused(data) == "params.yaml: train: missing key 'fallback'"


def test_a_wrong_type_deep_down_names_its_dotted_path() -> None:
    data = raw()
    data["train"]["column"]["width"] = "wide"
    assert refused(data) == "params.yaml: train.column: key 'width' must be float, got 'wide'"


def test_a_section_that_is_not_a_mapping_is_named() -> None:
    data = raw()
    data["train"] = 3
    assert refused(data) == "params.yaml: key 'train' must be a mapping of keys to values, got 3"


def test_a_mapping_of_sections_checks_each_entry_under_its_name() -> None:
    data = raw()
    del data["heads"]["harm"]["width"]
    assert refused(data) == "params.yaml: heads.harm: missing key 'width'"
    data = raw()
    data["heads"]["harm"] = "x"
    assert refused(data) == (
        "params.yaml: heads: key 'harm' must be a mapping of keys to values, got 'x'"
    )
    data = raw()
    data["heads"] = {3: data["heads"]["harm"]}
    assert refused(data) == "params.yaml: heads: key 3 must be str"


def test_top_level_keys_are_checked_without_a_path() -> None:
    data = raw()
    data["extra"] = 1
    assert refused(data) == "params.yaml: unknown key 'extra'; allowed keys: seed, train, heads"
    del data["extra"], data["seed"]
    assert refused(data) == "params.yaml: missing key 'seed'"


def test_a_failed_post_init_check_is_prefixed_with_the_file() -> None:
    with pytest.raises(ValueError, match=r"^data.jsonl:3: ranged.size must be >= 1, got 0$"):
        build(Ranged, {"size": 0}, "data.jsonl:3")
