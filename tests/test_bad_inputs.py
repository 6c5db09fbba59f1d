"""The bad-input corpus in tests/bad_inputs/: every bad file is refused with an actionable message.

Prompt files go through `load_prompts`, params files through `load_params`; a few go through the
stage scripts as subprocesses, which must exit 2 with one `<stage>: error:` line, no traceback and
no output file. The corpus and the expected handling of each file are listed in the README there.
No model is loaded: every stage run here fails before that point.
"""

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minicc.constitution import load_constitution
from minicc.errors import UserError
from minicc.params import load_params
from minicc.records import load_prompts

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "bad_inputs"
CONSTITUTION = ROOT / "constitution"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Case:
    name: str
    fragments: tuple[str, ...]
    """Text the error message must contain besides the path: the field or key, allowed values."""
    line: int | None = None
    """The line a JSONL error must name as `<path>:<line>:`; None for whole-file errors."""


def params_of(cases: list[Case]) -> list[object]:
    return [pytest.param(case, id=case.name) for case in cases]


PROMPT_CASES = [
    Case("prompts_invalid_json.jsonl", ("invalid JSON",), line=2),
    Case("prompts_truncated_last_line.jsonl", ("invalid JSON",), line=3),
    Case("prompts_invalid_json_after_blank_lines.jsonl", ("invalid JSON",), line=4),
    Case("prompts_json_list.jsonl", ("expected a JSON object", "list"), line=2),
    Case("prompts_json_string.jsonl", ("expected a JSON object", "str"), line=3),
    Case("prompts_id_not_string.jsonl", ("'id'", "str", "got 5"), line=1),
    Case("prompts_prompt_null.jsonl", ("'prompt'", "str", "None"), line=2),
    Case("prompts_missing_id.jsonl", ("missing key 'id'",), line=2),
    Case("prompts_duplicate_id.jsonl", ("duplicate id", "'adv-1'"), line=3),
    Case("prompts_empty_id.jsonl", ("'id'", "empty"), line=2),
    Case("prompts_empty_prompt.jsonl", ("'prompt'", "empty"), line=2),
    Case("prompts_whitespace_prompt.jsonl", ("'prompt'", "empty"), line=2),
    Case(
        "prompts_unknown_category.jsonl",
        ("'category'", "'adversarial'", "'borderline'", "'cooperative'", "'dangerous'"),
        line=3,
    ),
    Case(
        "prompts_unknown_field.jsonl",
        ("unknown key 'lang'", "id, prompt, category, source"),
        line=1,
    ),
    Case("prompts_invalid_utf8.jsonl", ("UTF-8",), line=2),
    Case("prompts_empty.jsonl", ("no prompts",)),
    Case("prompts_blank_lines_only.jsonl", ("no prompts",)),
    Case(
        "prompts_lone_surrogate.jsonl",
        ("'prompt'",),
        line=2,
    ),
    Case(
        "prompts_duplicate_key.jsonl",
        ("'prompt'",),
        line=1,
    ),
]

PARAMS_CASES = [
    Case(
        "params_unknown_top_level_key.yaml",
        (
            "unknown key 'epochs'",
            "seed, models, generate, critique, critic_probe, critic_lora, select",
        ),
    ),
    Case(
        "params_unknown_key_in_section.yaml",
        (
            "generate",
            "unknown key 'num_candidate'",
            "num_candidates, temperature, top_p, max_new_tokens, batch_size",
        ),
    ),
    Case("params_wrong_type.yaml", ("generate", "'temperature'", "float", "'hot'")),
    Case("params_bool_as_int.yaml", ("generate", "'max_new_tokens'", "int", "True")),
    Case("params_exponent_without_dot.yaml", ("'temperature'", "float", "'8e-1'")),
    Case("params_negative_temperature.yaml", ("generate.temperature", "> 0", "-0.5")),
    Case("params_zero_candidates.yaml", ("generate.num_candidates", ">= 1", "got 0")),
    Case("params_top_p_too_big.yaml", ("generate.top_p", "(0, 1]", "1.5")),
    Case(
        "params_unknown_policy.yaml",
        ("select", "'policy'", "'best'", "'margin'", "'diverse'", "'random'"),
    ),
    Case("params_unknown_critic_style.yaml", ("critique", "'style'", "'instruct'", "'base'")),
    Case(
        "params_unknown_device.yaml", ("models", "'device'", "'auto'", "'cpu'", "'cuda'", "'mps'")
    ),
    Case("params_missing_section.yaml", ("missing key 'select'",)),
    Case("params_missing_key.yaml", ("generate", "missing key 'top_p'")),
    Case("params_section_not_mapping.yaml", ("'critique'", "mapping")),
    Case("params_negative_seed.yaml", ("'seed'", ">= 0", "-1")),
    Case("params_not_a_mapping.yaml", ("expected a mapping",)),
    Case("params_empty.yaml", ("expected a mapping",)),
    Case("params_invalid_yaml.yaml", ("invalid YAML", "line 53")),
    Case(
        "params_invalid_utf8.yaml",
        ("UTF-8",),
    ),
    Case(
        "params_duplicate_key.yaml",
        ("'top_p'",),
    ),
]

OK_PROMPTS = [
    "ok_prompts_bom.jsonl",
    "ok_prompts_crlf.jsonl",
    "ok_prompts_bom_crlf.jsonl",
    "ok_prompts_blank_lines.jsonl",
]
OK_PARAMS = ["ok_params_bom.yaml", "ok_params_crlf.yaml"]
OTHER_FILES = ["ok_prompts_clean.jsonl", "critiques_score_not_number.jsonl"]


def corpus_files() -> set[str]:
    return {p.name for p in CORPUS.iterdir() if p.name not in {"README.md", ".gitattributes"}}


def test_every_corpus_file_is_documented_and_tested() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^- `([^`]+)` — ", readme, flags=re.MULTILINE))
    tested = {c.name for c in PROMPT_CASES + PARAMS_CASES} | set(OK_PROMPTS + OK_PARAMS)
    assert documented == corpus_files()
    assert tested | set(OTHER_FILES) == corpus_files()
    assert len(PROMPT_CASES) + len(PARAMS_CASES) >= 20


def test_awkward_bytes_survived_checkout() -> None:
    """Guards the acceptance tests against a git that converted line endings or encodings."""
    assert (CORPUS / "ok_prompts_bom.jsonl").read_bytes().startswith(BOM)
    crlf = (CORPUS / "ok_prompts_crlf.jsonl").read_bytes()
    assert crlf.count(b"\r\n") == crlf.count(b"\n") == 3
    assert b"\r" not in (CORPUS / "ok_prompts_clean.jsonl").read_bytes()
    for name in ("prompts_invalid_utf8.jsonl", "params_invalid_utf8.yaml"):
        with pytest.raises(UnicodeDecodeError):
            (CORPUS / name).read_bytes().decode("utf-8")


@pytest.mark.parametrize("case", params_of(PROMPT_CASES))
def test_bad_prompt_file_is_rejected(case: Case) -> None:
    path = CORPUS / case.name
    with pytest.raises(UserError) as caught:
        load_prompts(path)
    message = str(caught.value)
    where = f"{path}:{case.line}:" if case.line is not None else f"{path}:"
    assert message.startswith(where), message
    assert "\n" not in message
    for fragment in case.fragments:
        assert fragment in message


@pytest.mark.parametrize("case", params_of(PARAMS_CASES))
def test_bad_params_file_is_rejected(case: Case) -> None:
    with pytest.raises(UserError) as caught:
        load_params(CORPUS / case.name)
    for fragment in case.fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("case", params_of(PARAMS_CASES))
def test_params_error_names_the_file(case: Case) -> None:
    """Regression: range errors once said 'params.yaml:' whatever file --params named."""
    path = CORPUS / case.name
    with pytest.raises(UserError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}:"), str(caught.value)


@pytest.mark.parametrize("case", params_of(PARAMS_CASES))
def test_params_error_is_one_line(case: Case) -> None:
    """Regression: invalid YAML once produced PyYAML's multi-line report."""
    with pytest.raises(UserError) as caught:
        load_params(CORPUS / case.name)
    assert "\n" not in str(caught.value), str(caught.value)


def test_missing_params_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(UserError, match="params file not found") as caught:
        load_params(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name", OK_PROMPTS)
def test_awkward_prompt_file_loads_like_the_clean_one(name: str) -> None:
    assert load_prompts(CORPUS / name) == load_prompts(CORPUS / "ok_prompts_clean.jsonl")


@pytest.mark.parametrize("name", OK_PARAMS)
def test_awkward_params_file_loads_like_a_plain_one(name: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    raw = (CORPUS / name).read_bytes().removeprefix(BOM).replace(b"\r\n", b"\n")
    plain.write_bytes(raw)
    assert load_params(CORPUS / name) == load_params(plain)


def test_bom_is_only_dropped_at_the_start(tmp_path: Path) -> None:
    """A BOM in the middle of a file is a character inside the line, so that JSON is invalid."""
    clean = (CORPUS / "ok_prompts_clean.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "bom_line_2.jsonl"
    path.write_bytes(clean[0] + BOM + clean[1])
    with pytest.raises(UserError, match="invalid JSON") as caught:
        load_prompts(path)
    assert str(caught.value).startswith(f"{path}:2:")


HUGE = 1_000_000


@pytest.fixture
def huge_prompt(tmp_path: Path) -> Path:
    """huge_prompt.jsonl (README): a ~1 MB prompt line, generated rather than committed."""
    clean = (CORPUS / "ok_prompts_clean.jsonl").read_text(encoding="utf-8").split("\n")
    big = '{"id": "big", "prompt": "' + "ab " * (HUGE // 3) + '", "category": "%s", "source": "x"}'
    path = tmp_path / "huge_prompt.jsonl"
    path.write_text(clean[0] + "\n" + big + "\n", encoding="utf-8")
    return path


def test_huge_prompt_line_loads_intact(huge_prompt: Path) -> None:
    path = huge_prompt.with_name("huge_ok.jsonl")
    path.write_text(huge_prompt.read_text(encoding="utf-8") % "cooperative", encoding="utf-8")
    prompts = load_prompts(path)
    assert [p.id for p in prompts] == ["adv-1", "big"]
    assert len(prompts[1].prompt) == 3 * (HUGE // 3)


def test_huge_prompt_line_error_stays_short(huge_prompt: Path) -> None:
    path = huge_prompt.with_name("huge_bad.jsonl")
    path.write_text(huge_prompt.read_text(encoding="utf-8") % "dangerous", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_prompts(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2:")
    assert "'category'" in message
    assert len(message) < 500


def test_constitution_file_with_invalid_utf8_is_a_user_error(tmp_path: Path) -> None:
    principles = tmp_path / "principles.yaml"
    principles.write_bytes(
        (CONSTITUTION / "principles.yaml").read_bytes().replace(b"\n", b" # caf\xe9\n", 1)
    )
    with pytest.raises(UserError, match="UTF-8"):
        load_constitution(principles, CONSTITUTION / "critic_instruct.yaml", "instruct")


# --- stage scripts as subprocesses -----------------------------------------------------------


def run_stage(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MINICC_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, f"stages/{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], stage: str, fragments: tuple[str, ...], out: Path
) -> None:
    """Exit 2, one `<stage>: error:` line on stderr naming the problem, nothing written."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{stage}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    assert not out.exists(), sorted(out.rglob("*"))


def select_args(tmp_path: Path, critiques: Path, params: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        "--critiques",
        str(critiques),
        "--out",
        str(out / "selected.jsonl"),
        "--pairs-out",
        str(out / "pairs.jsonl"),
        "--params",
        str(params),
    ]


@pytest.mark.parametrize(
    ("critiques", "params", "fragments"),
    [
        pytest.param(
            "critiques_score_not_number.jsonl",
            ROOT / "params.yaml",
            ("critiques_score_not_number.jsonl:2:", "'score'"),
            id="bad-critiques",
        ),
        pytest.param(
            "prompts_invalid_json.jsonl",
            ROOT / "params.yaml",
            ("prompts_invalid_json.jsonl:1:", "unknown key 'id'", "prompt_id"),
            id="prompt-file-as-critiques",
        ),
        pytest.param(
            "critiques_score_not_number.jsonl",
            CORPUS / "params_unknown_policy.yaml",
            ("params_unknown_policy.yaml", "'best', 'margin', 'diverse'"),
            id="unknown-policy",
        ),
        pytest.param(
            "critiques_score_not_number.jsonl",
            CORPUS / "missing-params.yaml",
            ("missing-params.yaml", "not found"),
            id="missing-params",
        ),
        pytest.param(
            "critiques_score_not_number.jsonl",
            CORPUS / "params_invalid_yaml.yaml",
            ("params_invalid_yaml.yaml", "invalid YAML"),
            id="invalid-yaml",
        ),
    ],
)
def test_select_stage_fails_cleanly(
    critiques: str, params: Path, fragments: tuple[str, ...], tmp_path: Path
) -> None:
    args = select_args(tmp_path, CORPUS / critiques, params)
    result = run_stage("select_samples.py", args, tmp_path)
    assert_clean_failure(result, "select", fragments, tmp_path / "out")


@pytest.mark.parametrize(
    ("critiques", "selected", "fragments"),
    [
        pytest.param(
            "critiques_score_not_number.jsonl",
            "ok_prompts_clean.jsonl",
            ("critiques_score_not_number.jsonl:2:", "'score'"),
            id="bad-critiques",
        ),
        pytest.param(
            "prompts_json_list.jsonl",
            "ok_prompts_clean.jsonl",
            ("prompts_json_list.jsonl:1:", "unknown key 'id'"),
            id="wrong-schema",
        ),
    ],
)
def test_summarize_stage_fails_cleanly(
    critiques: str, selected: str, fragments: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "--critiques",
        str(CORPUS / critiques),
        "--selected",
        str(CORPUS / selected),
        "--metrics-out",
        str(out / "pipeline.json"),
        "--detail-out",
        str(out / "detail.json"),
        "--histogram-out",
        str(out / "score_distribution.csv"),
    ]
    result = run_stage("summarize.py", args, tmp_path)
    assert_clean_failure(result, "summarize", fragments, out)


def test_generate_stage_fails_on_bad_prompts_before_loading_a_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "--prompts",
        str(CORPUS / "prompts_duplicate_id.jsonl"),
        "--out",
        str(out / "candidates.jsonl"),
        "--params",
        str(ROOT / "params.yaml"),
    ]
    result = run_stage("generate.py", args, tmp_path)
    assert_clean_failure(result, "generate", ("prompts_duplicate_id.jsonl:3:", "duplicate id"), out)
    assert not (tmp_path / "cache").exists(), "no model conversion or resume log expected"


def test_critique_stage_fails_on_missing_constitution_before_loading_a_model(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "no-principles.yaml"
    args = [
        "--candidates",
        str(CORPUS / "ok_prompts_clean.jsonl"),
        "--principles",
        str(missing),
        "--instruct-template",
        str(CONSTITUTION / "critic_instruct.yaml"),
        "--base-template",
        str(CONSTITUTION / "critic_base.yaml"),
        "--trained-critic",
        str(tmp_path / "no-critic"),
        "--out",
        str(out / "critiques.jsonl"),
        "--params",
        str(ROOT / "params.yaml"),
    ]
    result = run_stage("critique.py", args, tmp_path)
    assert_clean_failure(result, "critique", (str(missing), "not found"), out)
    assert not (tmp_path / "cache").exists(), "no model conversion or resume log expected"
