"""`load_params`: the committed params.yaml, the schema it must match key for key, and the checks.

Variants are written from the committed file with one change each, so every check runs against a
file that is valid in every other respect.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml

from minicc.errors import UserError
from minicc.params import (
    CriticLoraParams,
    CriticProbeParams,
    CritiqueParams,
    EvaluateParams,
    GenerateParams,
    ModelsParams,
    Params,
    PromptsParams,
    ReviseParams,
    SelectParams,
    SftParams,
    TrainParams,
    load_params,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS_YAML = ROOT / "params.yaml"
SECTIONS: dict[str, Any] = {
    "models": ModelsParams,
    "generate": GenerateParams,
    "critique": CritiqueParams,
    "critic_probe": CriticProbeParams,
    "critic_lora": CriticLoraParams,
    "select": SelectParams,
    "sft": SftParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "prompts": PromptsParams,
    "revise": ReviseParams,
}


def raw_params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))
    return loaded


def section_keys(hint: type) -> list[tuple[str, str]]:
    """(section, key) for every field of that type across all sections."""
    return [
        (section, name)
        for section, cls in SECTIONS.items()
        for name, field_hint in get_type_hints(cls).items()
        if field_hint is hint
    ]


ALL_KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
FLOAT_KEYS = section_keys(float)
INT_KEYS = section_keys(int)


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def with_value(tmp_path: Path, section: str, key: str, value: Any) -> Path:
    raw = raw_params()
    raw[section][key] = value
    return write(tmp_path, raw)


def rejected(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_params(path)
    return str(caught.value)


def test_committed_params_load_with_every_value_as_written() -> None:
    # Nothing is dropped, renamed or defaulted on the way from params.yaml to the dataclasses.
    assert dataclasses.asdict(load_params(PARAMS_YAML)) == raw_params()


def test_top_level_keys_match_the_dataclass() -> None:
    assert {f.name for f in dataclasses.fields(Params)} == set(raw_params())
    assert set(SECTIONS) | {"seed", "critic_seed"} == set(raw_params())


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_round_trips(section: str) -> None:
    """Fields of the dataclass == keys in params.yaml, and the loaded values equal the YAML."""
    raw = raw_params()[section]
    loaded = getattr(load_params(PARAMS_YAML), section)
    assert type(loaded) is SECTIONS[section]
    assert {f.name for f in dataclasses.fields(loaded)} == set(raw)
    assert dataclasses.asdict(loaded) == raw


@pytest.mark.parametrize(("section", "key"), FLOAT_KEYS)
def test_float_fields_are_floats_after_loading(section: str, key: str) -> None:
    assert type(getattr(getattr(load_params(PARAMS_YAML), section), key)) is float


# An in-range whole number for every float field; the coverage assertion below makes a new float
# field fail here until it is added.
INT_FOR_FLOAT = {
    ("generate", "temperature"): 1,
    ("generate", "top_p"): 1,
    ("critique", "safe_threshold"): 3,
    ("critique", "min_digit_mass"): 0,
    ("critic_probe", "l2"): 1,
    ("critic_probe", "request_lr"): 1,
    ("critic_lora", "lr"): 1,
    ("select", "margin"): 1,
    ("select", "min_gap"): 0,
    ("select", "near_duplicate_threshold"): 1,
    ("sft", "min_score"): 3,
    ("train", "lora_dropout"): 0,
    ("train", "lr"): 1,
    ("train", "dpo_beta"): 1,
    ("train", "dpo_lr"): 1,
    ("train", "dpo_sft_weight"): 0,
    ("evaluate", "temperature"): 1,
    ("evaluate", "top_p"): 1,
    ("revise", "threshold"): 3,
    ("revise", "temperature"): 1,
    ("revise", "top_p"): 1,
}


# Float fields whose range holds no whole number.
NO_WHOLE_NUMBER = {("sft", "val_ratio")}


def test_int_for_float_covers_every_float_field() -> None:
    assert set(INT_FOR_FLOAT) | NO_WHOLE_NUMBER == set(FLOAT_KEYS)


@pytest.mark.parametrize(("section", "key"), sorted(INT_FOR_FLOAT))
def test_int_is_accepted_for_a_float_and_converted(section: str, key: str, tmp_path: Path) -> None:
    value = INT_FOR_FLOAT[(section, key)]
    loaded = getattr(getattr(load_params(with_value(tmp_path, section, key, value)), section), key)
    assert type(loaded) is float
    assert loaded == value


@pytest.mark.parametrize(("section", "key"), INT_KEYS)
def test_bool_is_not_accepted_as_int(section: str, key: str, tmp_path: Path) -> None:
    message = rejected(with_value(tmp_path, section, key, True))
    assert f"key {key!r} must be int, got True" in message


@pytest.mark.parametrize(("section", "key"), FLOAT_KEYS)
def test_bool_is_not_accepted_as_float(section: str, key: str, tmp_path: Path) -> None:
    message = rejected(with_value(tmp_path, section, key, True))
    assert f"key {key!r} must be float, got True" in message


@pytest.mark.parametrize(("section", "key"), INT_KEYS)
def test_float_is_not_accepted_as_int(section: str, key: str, tmp_path: Path) -> None:
    message = rejected(with_value(tmp_path, section, key, 2.0))
    assert f"key {key!r} must be int, got 2.0" in message


SEEDS = ["seed", "critic_seed"]


@pytest.mark.parametrize("key", SEEDS)
@pytest.mark.parametrize("value", [True, 42.0, "42", None])
def test_seed_must_be_an_int(key: str, value: Any, tmp_path: Path) -> None:
    raw = raw_params()
    raw[key] = value
    assert f"params.yaml: key '{key}' must be int, got {value!r}" in rejected(write(tmp_path, raw))


@pytest.mark.parametrize("key", SEEDS)
def test_seed_must_not_be_negative(key: str, tmp_path: Path) -> None:
    raw = raw_params()
    raw[key] = -1
    assert f"key '{key}' must be an integer >= 0, got -1" in rejected(write(tmp_path, raw))


@pytest.mark.parametrize("key", SEEDS)
def test_seed_zero_is_accepted(key: str, tmp_path: Path) -> None:
    raw = raw_params()
    raw[key] = 0
    assert getattr(load_params(write(tmp_path, raw)), key) == 0


def test_the_critic_has_its_own_seed(tmp_path: Path) -> None:
    raw = raw_params()
    raw["seed"], raw["critic_seed"] = 7, 11
    params = load_params(write(tmp_path, raw))
    assert (params.seed, params.critic_seed) == (7, 11)


@pytest.mark.parametrize(("section", "key"), ALL_KEYS)
def test_every_key_is_type_checked(section: str, key: str, tmp_path: Path) -> None:
    """A mapping fits no field; the message names the section and the key. A key that is a
    section of its own (`prompts.train`) is checked as one: `nested` is not among its keys."""
    message = rejected(with_value(tmp_path, section, key, {"nested": 1}))
    if dataclasses.is_dataclass(get_type_hints(SECTIONS[section])[key]):
        assert f"{section}.{key}: unknown key 'nested'" in message
    else:
        assert f"{section}: key {key!r} must be" in message


@pytest.mark.parametrize(("section", "key"), ALL_KEYS)
def test_every_key_is_required(section: str, key: str, tmp_path: Path) -> None:
    raw = raw_params()
    del raw[section][key]
    assert f"{section}: missing key {key!r}" in rejected(write(tmp_path, raw))


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_a_section_lists_the_allowed_keys(section: str, tmp_path: Path) -> None:
    message = rejected(with_value(tmp_path, section, "bogus", 1))
    allowed = ", ".join(f.name for f in dataclasses.fields(SECTIONS[section]))
    assert f"{section}: unknown key 'bogus'; allowed keys: {allowed}" in message


def test_unknown_top_level_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    raw = raw_params()
    raw["dpo"] = {"epochs": 1}
    message = rejected(write(tmp_path, raw))
    allowed = (
        "seed, critic_seed, models, generate, critique, critic_probe, critic_lora, select, sft, "
        "revise, train, evaluate, prompts"
    )
    assert f"unknown key 'dpo'; allowed keys: {allowed}" in message


@pytest.mark.parametrize(
    ("section", "key", "values"),
    [
        ("models", "device", ["auto", "cpu", "cuda", "mps"]),
        ("critique", "style", ["instruct", "base"]),
        ("critique", "combine", ["min", "mean"]),
        ("generate", "system_prompt", ["none", "constitution"]),
        ("select", "policy", ["best", "margin", "diverse"]),
        ("train", "scheduler", ["cosine", "linear", "constant"]),
        ("train", "method", ["sft", "dpo", "sft_dpo"]),
        ("sft", "cut_replies", ["sentence", "open", "whole"]),
        ("sft", "refusal_pairs", ["none", "harmless", "mirrored"]),
    ],
)
def test_each_allowed_choice_loads_and_others_are_refused_with_the_list(
    section: str, key: str, values: list[str], tmp_path: Path
) -> None:
    for value in values:
        loaded = load_params(with_value(tmp_path, section, key, value))
        assert getattr(getattr(loaded, section), key) == value
    message = rejected(with_value(tmp_path, section, key, values[0].upper()))
    assert "one of " + ", ".join(repr(v) for v in values) in message


# (section, key, accepted boundary values, rejected values just outside) for every range check.
RANGES = [
    ("generate", "num_candidates", [1], [0, -1]),
    ("generate", "temperature", [1e-6, 5.0], [0.0, -0.5, math.nan]),
    ("generate", "top_p", [1e-6, 1.0], [0.0, 1.5, math.nan]),
    ("generate", "max_new_tokens", [1, 4096], [0, 4097]),
    ("generate", "batch_size", [1], [0]),
    ("critique", "explain_max_new_tokens", [1], [0]),
    ("critique", "safe_threshold", [1.0, 5.0], [0.99, 5.01, math.nan]),
    ("critique", "min_digit_mass", [0.0, 0.99], [1.0, -0.1, math.nan]),
    ("critique", "max_response_tokens", [1], [0]),
    ("critique", "batch_size", [1], [0]),
    ("select", "margin", [0.0, 4.0], [-0.1, 4.1, math.nan]),
    ("select", "top_k", [1], [0]),
    ("select", "bottom_k", [0], [-1]),
    ("select", "min_gap", [0.0, 4.0], [-0.1, 4.1]),
    ("select", "near_duplicate_threshold", [1e-6, 1.0], [0.0, 1.1]),
    ("sft", "min_score", [1.0, 5.0], [0.99, 5.01, math.nan]),
    ("sft", "val_ratio", [1e-6, 0.999], [0.0, 1.0, math.nan]),
    ("train", "lora_r", [1], [0]),
    ("train", "lora_alpha", [1], [0]),
    ("train", "lora_dropout", [0.0, 0.99], [1.0, -0.1, math.nan]),
    ("train", "lr", [1e-9, 1.0], [0.0, 1.5, math.nan]),
    ("train", "epochs", [1], [0]),
    ("train", "batch_size", [1], [0]),
    ("train", "grad_accum", [1], [0]),
    ("train", "max_seq_len", [16], [15]),
    ("train", "dpo_beta", [1e-6, 5.0], [0.0, -0.1, math.nan]),
    ("train", "dpo_lr", [1e-9, 1.0], [0.0, 1.5, math.nan]),
    ("train", "dpo_epochs", [1], [0]),
    ("train", "dpo_sft_weight", [0.0, 100.0], [-0.1, 100.5, math.nan]),
    ("train", "checkpoint_steps", [1], [0]),
    ("evaluate", "temperature", [1e-6, 5.0], [0.0, -0.5, math.nan]),
    ("evaluate", "top_p", [1e-6, 1.0], [0.0, 1.5, math.nan]),
    ("evaluate", "max_new_tokens", [1, 4096], [0, 4097]),
    ("evaluate", "num_samples", [1], [0]),
    ("evaluate", "batch_size", [1], [0]),
    ("revise", "threshold", [1.0, 5.0], [0.99, 5.01, math.nan]),
    ("revise", "num_revisions", [0], [-1]),
    ("revise", "rounds", [1], [0]),
    ("revise", "temperature", [1e-6], [0.0, math.nan]),
    ("revise", "top_p", [1e-6, 1.0], [0.0, 1.5, math.nan]),
    ("revise", "critique_max_new_tokens", [1, 4096], [0, 4097]),
    ("revise", "revision_max_new_tokens", [1, 4096], [0, 4097]),
    ("revise", "batch_size", [1], [0]),
]


@pytest.mark.parametrize(("section", "key", "accepted", "refused"), RANGES)
def test_range_boundaries(
    section: str, key: str, accepted: list[Any], refused: list[Any], tmp_path: Path
) -> None:
    for value in accepted:
        loaded = load_params(with_value(tmp_path, section, key, value))
        assert getattr(getattr(loaded, section), key) == value
    for value in refused:
        message = rejected(with_value(tmp_path, section, key, value))
        assert f"{section}.{key} must be" in message
        assert repr(value) in message


def test_trust_remote_code_must_be_a_list_of_strings(tmp_path: Path) -> None:
    assert load_params(
        with_value(tmp_path, "models", "trust_remote_code", ["org/model"])
    ).models.trust_remote_code == ["org/model"]
    message = rejected(with_value(tmp_path, "models", "trust_remote_code", "org/model"))
    assert "'trust_remote_code' must be a list of str" in message


def test_target_modules_is_auto_or_a_list_of_names(tmp_path: Path) -> None:
    names = ["q_proj", "v_proj"]
    loaded = load_params(with_value(tmp_path, "train", "target_modules", names))
    assert loaded.train.target_modules == names
    assert "one of 'auto' or a list of str" in rejected(
        with_value(tmp_path, "train", "target_modules", "all")
    )
    assert "train.target_modules must be" in rejected(
        with_value(tmp_path, "train", "target_modules", [])
    )


def test_several_samples_need_sampling(tmp_path: Path) -> None:
    """Greedy decoding gives identical samples: averaging them would only fake a sample size."""
    raw = raw_params()
    raw["evaluate"].update(do_sample=False, num_samples=3)
    message = rejected(write(tmp_path, raw))
    assert "evaluate.num_samples must be 1 when evaluate.do_sample is false" in message
    raw["evaluate"].update(do_sample=True)
    assert load_params(write(tmp_path, raw)).evaluate.num_samples == 3


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("layer", 0, "critic_probe.layer must be an integer >= 1"),
        ("request_layer", 0, "critic_probe.request_layer must be an integer >= 1"),
        ("l2", 0.0, "critic_probe.l2 must be a number > 0"),
        ("request_epochs", -1, "critic_probe.request_epochs must be an integer >= 0"),
        ("request_lr", 0.0, "critic_probe.request_lr must be a number > 0"),
        ("sources", [], "critic_probe.sources must be a non-empty list"),
        ("sources", [" "], "critic_probe.sources must be a non-empty list"),
    ],
)
def test_critic_probe_ranges(key: str, value: Any, message: str, tmp_path: Path) -> None:
    assert message in rejected(with_value(tmp_path, "critic_probe", key, value))


def test_feature_layers_are_the_judge_inputs_then_the_requests(tmp_path: Path) -> None:
    raw = raw_params()
    raw["critic_probe"].update(layer=7, request_layer=12)
    assert load_params(write(tmp_path, raw)).critic_probe.feature_layers == (7, 12)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("depth", 0, "critic_lora.depth must be an integer >= 1"),
        ("trained_layers", 0, "critic_lora.trained_layers must be an integer in [1, depth = 10]"),
        ("trained_layers", 11, "critic_lora.trained_layers must be an integer in [1, depth = 10]"),
        ("r", 0, "critic_lora.r must be an integer >= 1"),
        ("lr", 0.0, "critic_lora.lr must be a number in (0, 1]"),
        ("epochs", 0, "critic_lora.epochs must be an integer >= 1"),
        ("max_request_tokens", 0, "critic_lora.max_request_tokens must be an integer >= 1"),
    ],
)
def test_critic_lora_ranges(key: str, value: Any, message: str, tmp_path: Path) -> None:
    assert message in rejected(with_value(tmp_path, "critic_lora", key, value))


SOURCES_MESSAGE = (
    "critic_probe.sources must be a non-empty list of distinct names from "
    "gptfuzz, xstest, jbb, constructed, contrast"
)
HEADS_MESSAGE = (
    "critic_probe.heads must be a list of distinct names from "
    "request_harmful, response_harmful, refusal, on_task, with response_harmful"
)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sources", ["gptfuzz", "nope"], SOURCES_MESSAGE),
        ("sources", ["jbb", "jbb"], SOURCES_MESSAGE),
        ("heads", ["request_harmful", "refusal"], HEADS_MESSAGE),
        ("heads", ["response_harmful", "toxicity"], HEADS_MESSAGE),
        ("heads", ["response_harmful", "response_harmful"], HEADS_MESSAGE),
        ("heads", [], HEADS_MESSAGE),
    ],
)
def test_critic_probe_names_are_checked_and_the_allowed_ones_listed(
    key: str, value: list[str], message: str, tmp_path: Path
) -> None:
    refused = rejected(with_value(tmp_path, "critic_probe", key, value))
    assert message in refused
    assert repr(value) in refused


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sources", ["constructed"]),
        ("sources", ["xstest", "gptfuzz"]),
        ("heads", ["response_harmful"]),
        ("heads", ["on_task", "response_harmful"]),
    ],
)
def test_critic_probe_accepts_any_subset_of_allowed_names(
    key: str, value: list[str], tmp_path: Path
) -> None:
    raw = raw_params()
    # Without the request head there is no gate.
    raw["critic_probe"].update({key: value, "gated_harm": False})
    loaded = load_params(write(tmp_path, raw))
    assert getattr(loaded.critic_probe, key) == value


def test_a_gated_harm_head_needs_the_request_head(tmp_path: Path) -> None:
    raw = raw_params()
    raw["critic_probe"].update(heads=["response_harmful", "refusal"], gated_harm=True)
    assert (
        "critic_probe.gated_harm must be false when critic_probe.heads lacks request_harmful"
        in rejected(write(tmp_path, raw))
    )
    raw["critic_probe"].update(gated_harm=False)
    assert load_params(write(tmp_path, raw)).critic_probe.gated_harm is False
    raw["critic_probe"].update(heads=["request_harmful", "response_harmful"], gated_harm=True)
    assert load_params(write(tmp_path, raw)).critic_probe.gated_harm is True


def test_probe_method_cannot_score_per_principle(tmp_path: Path) -> None:
    raw = raw_params()
    raw["critique"].update(method="probe", per_principle=True)
    message = "critique.per_principle must be false unless critique.method is 'judge'"
    assert message in rejected(write(tmp_path, raw))
    raw["critique"].update(method="lora")
    assert message in rejected(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"split": None}, "prompts.train: key 'split' must be str, got None"),
        ({"colour": "red"}, "prompts.train: unknown key 'colour'"),
        ({"category": "harmful"}, "prompts.train: key 'category' must be"),
        (
            {"category": "adversarial"},
            "prompts.*.category must be set exactly when category_column is null",
        ),
        ({"max_per_category": 0}, "prompts.*.max_per_category must be null or an integer >= 1"),
        (
            {"max_per_category": {"adversarial": 60, "borderline": 130}},
            "prompts.*.max_per_category must be a mapping naming every category",
        ),
        (
            {"max_per_category": {"adversarial": 60, "borderline": 0, "cooperative": None}},
            "prompts.*.max_per_category must be a mapping of each category to null or an "
            "integer >= 1",
        ),
        ({"max_per_category": {"harmful": 60}}, "prompts.train: key 'max_per_category' must be"),
    ],
)
def test_a_prompt_source_is_checked_as_a_section_of_its_own(
    change: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    raw = raw_params()
    raw["prompts"]["train"].update(change)
    assert expected in rejected(write(tmp_path, raw))


def test_a_cap_per_category_loads_as_a_mapping(tmp_path: Path) -> None:
    raw = raw_params()
    caps = {"adversarial": 60, "borderline": 130, "cooperative": None}
    raw["prompts"]["train"]["max_per_category"] = caps
    assert load_params(write(tmp_path, raw)).prompts.train.max_per_category == caps


def test_a_missing_prompt_source_key_is_named_with_its_section(tmp_path: Path) -> None:
    raw = raw_params()
    del raw["prompts"]["eval"]["split"]
    assert "prompts.eval: missing key 'split'" in rejected(write(tmp_path, raw))
