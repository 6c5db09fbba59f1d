"""Every metrics file dvc.yaml declares stays readable: at most 20 flattened keys, scalars only.

`dvc metrics show` and `dvc exp show` print one column per flattened key, and drop lists (a CI
written as a list never shows). The builders below make those files; detail (per category, per
source, per head) goes to `metrics/detail/` instead. The inputs cover every category, source
and pair kind, so a builder that grew with them would fail here.
"""

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from conftest import EOS_ENDED, weather_is_off_topic
from test_comparison import REFUSAL, crit
from test_critic_metrics import ROWS, TRAINING, scored_rows
from test_summary import CRITIQUES, sel

from minicc import comparison, critic_metrics, summary
from minicc.records import CATEGORIES, Category
from minicc.sft import PairTurns, SftSplit

MAX_KEYS = 20
EVERY_CATEGORY = [cast(Category, category) for category in CATEGORIES]
ROOT = Path(__file__).resolve().parents[1]


def flattened(value: Any, prefix: str = "") -> dict[str, Any]:
    """`a.b.c` keys as DVC flattens a metrics file; a list counts one key per element."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, item in items:
        found.update(flattened(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def stage_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "stages" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline_metrics() -> dict[str, Any]:
    selected = [sel(5.0, category) for category in EVERY_CATEGORY]
    selected += [sel(1.0, category, "rejected") for category in EVERY_CATEGORY]
    return summary.headline(summary.summarize(CRITIQUES, selected, weather_is_off_topic))


def eval_metrics() -> dict[str, Any]:
    baseline = [
        crit(f"{category}-{i}", k, 2.0 + k, "Boil it.", category)
        for category in EVERY_CATEGORY
        for i in range(3)
        for k in range(2)
    ]
    finetuned = [
        crit(c.prompt_id, int(c.candidate_id[-1]), 4.0, REFUSAL, c.category, "tuned")
        for c in baseline
    ]
    results = comparison.pair_outcomes(baseline, finetuned, weather_is_off_topic, EOS_ENDED)
    report = comparison.compare_report(results, 0, Path("eval.jsonl"))
    return comparison.headline(report, "critic@1+probe-abc")


def critic_eval_metrics() -> dict[str, Any]:
    report = critic_metrics.critic_report(ROWS, scored_rows())
    return critic_metrics.critic_headline({"method": "probe", "critic": "m@1", **report})


def critic_train_metrics() -> dict[str, Any]:
    return critic_metrics.training_headline(TRAINING)


def sft_metrics() -> dict[str, Any]:
    build_sft = stage_module("build_sft")
    return dict(
        build_sft.headline(
            build_sft.split_metrics(
                5, 4, {"refusals_trimmed": 1}, PairTurns([], 1, 1), 0, SftSplit([], [], [], [])
            )
        )
    )


BUILDERS = {
    "metrics/pipeline.json": pipeline_metrics,
    "metrics/eval.json": eval_metrics,
    "metrics/critic.json": critic_eval_metrics,
    "metrics/critic_train.json": critic_train_metrics,
    "metrics/sft.json": sft_metrics,
}


@pytest.mark.parametrize("path", sorted(BUILDERS))
def test_a_metrics_file_has_at_most_20_flattened_keys(path: str) -> None:
    keys = flattened(BUILDERS[path]())
    assert 0 < len(keys) <= MAX_KEYS, f"{path}: {len(keys)} keys: {sorted(keys)}"


@pytest.mark.parametrize("path", sorted(BUILDERS))
def test_a_metrics_file_holds_only_values_dvc_shows(path: str) -> None:
    for key, value in flattened(BUILDERS[path]()).items():
        assert value is None or isinstance(value, str | int | float), f"{path}: {key} = {value!r}"
    assert "per_category" not in str(BUILDERS[path]())


def test_flattened_counts_nested_keys_and_list_elements() -> None:
    assert sorted(flattened({"a": {"b": 1, "c": [2, 3]}, "d": None})) == [
        "a.b",
        "a.c.0",
        "a.c.1",
        "d",
    ]
