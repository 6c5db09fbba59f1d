"""End to end: the real DVC pipeline on a tiny copy of the project with the bundled model.

A module fixture copies the pipeline (dvc.yaml, stages, constitution, the package sources that
dvc.yaml lists as dependencies) into a temporary git + DVC repository with 6 prompts, 3 eval
prompts, a few labeled critic rows and tiny params, and runs the whole DAG once with
`dvc repro`: train_critic, prepare_prompts -> generate -> critique -> select -> summarize,
build_sft -> train_lora -> evaluate -> compare, and critic_eval. The stage scripts import the
installed (editable) `minicc`, so they run the code under test, not the copy.

Every run gets its own `MINICC_CACHE_DIR` (so resume logs never leak between tests) whose
`models` folder links to the project's `.cache/minicc/models`: the bundled model is converted
once, shared with `make repro`.

DVC messages these tests rely on (DVC 3.67): "Running stage '<name>':" for a stage that runs,
"Stage '<name>' didn't change, skipping" for one that does not, and "Data and pipelines are up
to date." when `dvc repro` has nothing to do.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_params

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
SHARED_MODELS = ROOT / ".cache" / "minicc" / "models"
CATEGORIES = ("adversarial", "borderline", "cooperative")
PROMPTS_PER_CATEGORY = 2
# Batches of 4 make 3 batches in each stage, so a crash can hit after the first or the second,
# and the baseline `dvc repro` is the uninterrupted run that a resumed one must reproduce.
BATCH_SIZE = 4
TINY = {
    "generate": {"num_candidates": 2, "max_new_tokens": 12, "batch_size": BATCH_SIZE},
    "critique": {"batch_size": BATCH_SIZE},
    "revise": {
        "critique_max_new_tokens": 6,
        "revision_max_new_tokens": 8,
        "batch_size": BATCH_SIZE,
    },
    # The probe reads layer 2 of 30: a weak critic, but every code path of the real one.
    "critic_probe": {"layer": 2, "request_layer": 2},
    # Every chosen sample becomes an example, and 2 of the 6 prompts go to validation.
    "sft": {"min_score": 1.0, "val_ratio": 0.34},
    "train": {"epochs": 1, "batch_size": 2, "max_seq_len": 128},
    "evaluate": {"max_new_tokens": 8, "batch_size": BATCH_SIZE},
}
NUM_PROMPTS = PROMPTS_PER_CATEGORY * len(CATEGORIES)
NUM_CANDIDATES = NUM_PROMPTS * TINY["generate"]["num_candidates"]
BATCHES = NUM_CANDIDATES // BATCH_SIZE
BATCH_COUNT = re.compile(r"\[(\d+) batches run, (\d+) resumed\]")
RUNNING = re.compile(r"^Running stage '([^']+)':", re.MULTILINE)
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.MULTILINE)
UP_TO_DATE = "Data and pipelines are up to date."
# The experiments on the data pipeline target its last stage, so they skip training.
TARGET = "summarize"
EVERY_STAGE = {
    "prepare_prompts",
    "train_critic",
    "generate",
    "critique@candidates",
    "revise",
    "critique@revisions",
    "select",
    "summarize",
    "build_sft",
    "train_lora",
    "evaluate@baseline",
    "evaluate@finetuned",
    "compare",
    "critic_eval",
}

GENERATE_ARGS = ["stages/generate.py", "--prompts", "data/prompts/train.jsonl"]
CRITIQUE_ARGS = [
    "stages/critique.py",
    "--principles",
    "constitution/principles.yaml",
    "--instruct-template",
    "constitution/critic_instruct.yaml",
    "--base-template",
    "constitution/critic_base.yaml",
    "--trained-critic",
    "models/critic",
]


def tiny_labeled(name: str, per_kind: int) -> str:
    """A few rows of each kind the critic sets hold, so every head and metric has both classes:
    real rows of each source and label, and the constructed rows made from the chosen ones."""
    rows = read_jsonl(ROOT / "data" / "critic" / name)
    real = [r for r in rows if r["construction"] is None]
    made_from = {r["pair_of"] for r in rows if r["construction"] is not None}
    kinds = [
        # Harmful rows that a constructed refusal was made from, for refusal > harmful pairs.
        lambda r: r["source"] == "gptfuzz" and r["harmful"] and r["id"] in made_from,
        lambda r: r["source"] == "gptfuzz" and not r["harmful"],
        lambda r: r["source"].startswith("jbb-") and r["harmful"] and r["id"] in made_from,
        lambda r: r["source"].startswith("jbb-") and not r["harmful"],
        lambda r: r["prompt_label"] == "safe" and r["response_kind"] == "full_refusal",
        lambda r: (
            r["prompt_label"] == "safe"
            and r["response_kind"] == "full_compliance"
            and r["id"] in made_from
        ),
        # The replies to the contrast pairs (train only): critic_probe.sources names them.
        lambda r: r["source"].startswith("contrast-") and r["harmful"],
        lambda r: r["source"].startswith("contrast-") and not r["harmful"],
    ]
    chosen = [row for kind in kinds for row in [r for r in real if kind(r)][:per_kind]]
    ids = {row["id"] for row in chosen}
    chosen += [r for r in rows if r["construction"] is not None and r["pair_of"] in ids]
    return "".join(json.dumps(row) + "\n" for row in chosen)


def tiny_requests(per_label: int) -> str:
    rows = read_jsonl(ROOT / "data" / "critic" / "requests.jsonl")
    chosen = [
        r for label in (True, False) for r in [r for r in rows if r["harmful"] == label][:per_label]
    ]
    return "".join(json.dumps(row) + "\n" for row in chosen)


def first_per_category(path: Path, count: int) -> str:
    rows = read_jsonl(path)
    chosen = [p for c in CATEGORIES for p in [p for p in rows if p["category"] == c][:count]]
    return "".join(json.dumps(p) + "\n" for p in chosen)


def make_cache(directory: Path) -> Path:
    """A private MINICC_CACHE_DIR whose converted models are the project's shared ones."""
    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True)
    (directory / "models").symlink_to(SHARED_MODELS, target_is_directory=True)
    return directory


def stage_env(cache: Path) -> dict[str, str]:
    """The environment of `make repro`, offline, with a private cache and one torch thread.

    One OpenMP thread per process: on a small machine shared with other work, threads that wait
    for a busy core make the model several times slower (the outputs are the same either way).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        MINICC_CACHE_DIR=str(cache),
        OMP_NUM_THREADS="1",
    )
    return env


def run(
    args: list[str], cwd: Path, cache: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=stage_env(cache),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    done = run(args, cwd, cache)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def resume_lines(cache: Path, stage: str) -> int:
    """Finished batches in the stage's resume log (complete lines only)."""
    logs = list((cache / "resume").glob(f"{stage}-*.jsonl"))
    return sum(log.read_bytes().count(b"\n") for log in logs)


def resume_logs(cache: Path) -> list[Path]:
    return sorted((cache / "resume").glob("*.jsonl"))


@dataclass(frozen=True)
class Project:
    root: Path
    baseline: Path
    """Copies of the outputs of the first `dvc repro`, kept apart from the workspace."""
    repro: subprocess.CompletedProcess[str]
    cache: Path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The tiny project, reproduced once and committed (the baseline of `dvc exp run`)."""
    base = tmp_path_factory.mktemp("e2e")
    root = base / "project"
    root.mkdir()
    shutil.copy(ROOT / "dvc.yaml", root)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("stages", "constitution", "minicc"):
        shutil.copytree(ROOT / folder, root / folder, ignore=ignore)
    write_params(root / "params.yaml", TINY)
    data = root / "data"
    (data / "critic").mkdir(parents=True)
    (data / "prompt_pool").mkdir()
    tiny_files = {
        # Fewer per category than prompts.train.max_per_category: prepare_prompts keeps them all.
        "prompt_pool/train.jsonl": first_per_category(
            ROOT / "data" / "prompt_pool" / "train.jsonl", PROMPTS_PER_CATEGORY
        ),
        "prompt_pool/eval.jsonl": first_per_category(
            ROOT / "data" / "prompt_pool" / "eval.jsonl", 1
        ),
        "critic/train.jsonl": tiny_labeled("train.jsonl", 3),
        "critic/eval.jsonl": tiny_labeled("eval.jsonl", 2),
        "critic/requests.jsonl": tiny_requests(4),
    }
    for name, text in tiny_files.items():
        (data / name).write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "data" / "refusal_labels", data / "refusal_labels")
    (root / ".gitignore").write_text("__pycache__/\n*.tmp\n", encoding="utf-8")
    cache = make_cache(base / "cache")
    for command in (
        ["git", "init", "-q"],
        # `dvc exp run` commits each experiment too, so the identity lives in the repository.
        ["git", "config", "user.name", "t"],
        ["git", "config", "user.email", "t@t"],
        ["git", "config", "commit.gpgsign", "false"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "tiny pipeline"],
    ):
        run_ok(command, root, cache)
    repro = run(["dvc", "repro"], root, cache, timeout=600)
    assert repro.returncode == 0, f"dvc repro failed:\n{repro.stdout}\n{repro.stderr}"
    baseline = base / "baseline"
    for output in ("data", "metrics", "models"):
        shutil.copytree(root / output, baseline / output)
    run_ok(["git", "add", "-A"], root, cache)
    run_ok(["git", "commit", "-q", "-m", "baseline results"], root, cache)
    return Project(root=root, baseline=baseline, repro=repro, cache=cache)


def test_repro_runs_every_stage_once_in_dependency_order(project: Project) -> None:
    ran = RUNNING.findall(project.repro.stdout)
    assert sorted(ran) == sorted(EVERY_STAGE)
    for before, after in [
        ("prepare_prompts", "generate"),
        ("prepare_prompts", "evaluate@baseline"),
        ("train_critic", "critique@candidates"),
        ("generate", "critique@candidates"),
        ("critique@candidates", "revise"),
        ("revise", "critique@revisions"),
        ("critique@revisions", "select"),
        ("select", "summarize"),
        ("select", "build_sft"),
        ("build_sft", "train_lora"),
        ("train_lora", "evaluate@finetuned"),
        ("evaluate@baseline", "compare"),
        ("evaluate@finetuned", "compare"),
        ("train_critic", "critic_eval"),
    ]:
        assert ran.index(before) < ran.index(after), (before, after)


def test_repro_builds_every_output(project: Project) -> None:
    data = project.root / "data"

    candidates = read_jsonl(data / "candidates.jsonl")
    assert len(candidates) == NUM_CANDIDATES
    assert len({c["candidate_id"] for c in candidates}) == NUM_CANDIDATES
    for row in candidates:
        assert row["prompt"] not in row["response"], row["candidate_id"]
        assert row["generator"].startswith("smollm2-135m-instruct@"), row["generator"]
        assert row["finish_reason"] in {"eos", "length"}
        assert 0 <= row["num_tokens"] <= TINY["generate"]["max_new_tokens"]

    critiques = read_jsonl(data / "critiques.jsonl")
    assert [c["candidate_id"] for c in critiques] == [c["candidate_id"] for c in candidates]
    for row in critiques:
        if row["scored"]:
            # The default critic is the probe: the rubric distribution and its expectation as
            # the score, no digit mass; safe when P(harmful help) = P(1) is below one half.
            assert 1 <= row["score"] <= 5, row
            assert len(row["probabilities"]) == 5 and row["digit_mass"] is None, row
            assert abs(sum(row["probabilities"]) - 1.0) < 1e-5, row
            expected = sum(k * p for k, p in enumerate(row["probabilities"], start=1))
            assert abs(row["score"] - expected) < 1e-5, row
            assert row["safe"] == (row["probabilities"][0] < 0.5), row
            assert "+probe-" in row["critic"], row
            assert row["unscored_reason"] is None
        else:
            assert row["score"] is None and row["safe"] is None, row
            assert row["unscored_reason"], row
    scored = sum(row["scored"] for row in critiques)

    selected = read_jsonl(data / "selected.jsonl")
    assert selected, "policy 'best' keeps one candidate per prompt with a scored candidate"
    # A selected sample is a scored candidate or a scored revision of one.
    revision_critiques = read_jsonl(data / "revision_critiques.jsonl")
    scored_ids = {c["candidate_id"] for c in critiques + revision_critiques}
    assert {s["candidate_id"] for s in selected} <= scored_ids
    candidate_ids = {c["candidate_id"] for c in critiques}
    assert all(s["revision_of"] in candidate_ids for s in selected if s["revision_of"])
    assert (data / "preference_pairs.jsonl").is_file()

    metrics = json.loads((project.root / "metrics" / "pipeline.json").read_text("utf-8"))
    assert set(metrics) == {"candidates", "selected"}
    assert metrics["candidates"]["count"] == NUM_CANDIDATES
    assert metrics["candidates"]["unscored"] == NUM_CANDIDATES - scored
    assert metrics["selected"]["count"] == len(selected)
    detail = read_json(project.root / "metrics" / "detail" / "pipeline.json")
    assert detail["candidates"]["scored"] == scored
    assert set(detail["candidates"]["per_category"]) == set(CATEGORIES)
    assert "per_category" in detail["selected"]

    histogram = (project.root / "metrics" / "score_distribution.csv").read_text("utf-8")
    header, *rows = histogram.splitlines()
    assert header == "score," + ",".join(CATEGORIES)
    assert sum(int(n) for row in rows for n in row.split(",")[1:]) == scored

    assert resume_logs(project.cache) == [], "a finished stage discards its resume log"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_training_and_evaluation_outputs(project: Project) -> None:
    root = project.root
    sft = read_json(root / "metrics" / "sft.json")
    train_rows = read_jsonl(root / "data" / "sft" / "train.jsonl")
    val_rows = read_jsonl(root / "data" / "sft" / "val.jsonl")
    assert sft["train"]["examples"] == len(train_rows) > 0
    assert sft["val"]["examples"] == len(val_rows) > 0
    prompts = [{r["prompt_id"] for r in rows} for rows in (train_rows, val_rows)]
    assert prompts[0] & prompts[1] == set(), "no prompt on both sides of the split"

    adapter = root / "models" / "lora-sft"
    assert (adapter / "COMPLETE").is_file() and (adapter / "adapter_config.json").is_file()
    train = read_json(root / "metrics" / "train.json")
    assert train["steps"] >= 1 and train["train_examples"] == len(train_rows)
    assert (root / "metrics" / "train_loss.csv").read_text("utf-8").startswith("step,loss\n")

    eval_prompts = read_jsonl(root / "data" / "prompts" / "eval.jsonl")
    for side in ("baseline", "finetuned"):
        rows = read_jsonl(root / "data" / "eval" / f"{side}.jsonl")
        assert [r["prompt_id"] for r in rows] == [p["id"] for p in eval_prompts]
    paired = read_jsonl(root / "data" / "eval" / "paired_results.jsonl")
    assert len(paired) == len(eval_prompts)
    metrics = read_json(root / "metrics" / "eval.json")
    assert "+probe-" in metrics["critic"], "by default the critic that selected judges"
    rates = ("appropriate_rate", "safe_rate", "refusal_rate", "over_refusal_rate")
    for measure in (*rates, "degenerate_rate"):
        assert set(metrics[measure]) == {"baseline", "finetuned", "p"}, measure
        assert 0.0 <= metrics[measure]["p"] <= 1.0, measure
    detail = read_json(root / "metrics" / "detail" / "eval.json")
    assert detail["baseline"]["num_prompts"] == len(eval_prompts)
    assert 0.0 <= detail["refusal_detector"]["accuracy"] <= 1.0
    assert detail["critic"]["id"] == metrics["critic"] == paired[0]["critic"]
    for side in ("baseline", "finetuned"):
        for key in ("mean_score", "std_dev", "safe_rate", "refusal_rate", "degenerate_rate"):
            assert key in detail[side] and key in detail[side]["per_category"]["adversarial"]
    score = detail["delta"]["mean_score"]
    fractions = score["improved_fraction"] + score["tied_fraction"] + score["worsened_fraction"]
    # Each fraction is written rounded to 4 decimals (thirds sum to 0.9999).
    assert math.isclose(fractions, 1.0, abs_tol=2e-4)
    assert score["delta_ci"][0] <= score["delta"] <= score["delta_ci"][1]
    assert [metrics["mean_score"]["delta_ci_low"], metrics["mean_score"]["delta_ci_high"]] == (
        score["delta_ci"]
    )


def test_critic_outputs(project: Project) -> None:
    root = project.root
    probe = read_json(root / "models" / "critic" / "probe.json")
    assert probe["layer"] == TINY["critic_probe"]["layer"]
    assert probe["request_layer"] == TINY["critic_probe"]["request_layer"]
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert sorted(probe["heads"]) == sorted(params["critic_probe"]["heads"])
    # The default gates the harm head by q: it reads twice the refusal head's features and the
    # reply's own states (hidden_size more), + 1; the refusal head reads the on-task head's and
    # the reply's opening (hidden_size more).
    assert probe["harm_gated"] is params["critic_probe"]["gated_harm"] is True
    width = len(probe["heads"]["refusal"]["weights"]) + probe["hidden_size"]
    assert probe["hidden_size"] > 0
    assert len(probe["heads"]["response_harmful"]["weights"]) == 2 * width + 1
    on_task = len(probe["heads"]["on_task"]["weights"])
    assert len(probe["heads"]["refusal"]["weights"]) == on_task + probe["hidden_size"]
    # The default fine-tunes a request classifier; it lies beside the probe that names it.
    manifest = read_json(root / "models" / "critic" / "request_classifier" / "classifier.json")
    assert probe["request_classifier"] == manifest["digest"]
    assert manifest["epochs"] == params["critic_probe"]["request_epochs"]
    trained = read_json(root / "metrics" / "critic_train.json")
    assert trained["n"] == len(read_jsonl(root / "data" / "critic" / "train.jsonl"))
    labeled = read_jsonl(root / "data" / "critic" / "eval.jsonl")
    real = [row for row in labeled if row["label_source"] != "constructed"]
    critic = read_json(root / "metrics" / "critic.json")
    assert critic["method"] == "probe"
    detail = read_json(root / "metrics" / "detail" / "critic.json")
    assert detail["rows"] == len(labeled)
    assert detail["n"] == len(real)
    for key in ("auroc", "balanced_accuracy", "ece"):
        assert key in critic, key
    assert critic["helpfulness_auroc"] is not None
    detail = read_json(root / "metrics" / "detail" / "critic.json")
    assert "confusion" in detail and "accuracy" in detail and "harmful" in detail
    assert set(detail["per_source"]) == {"gptfuzz", "xstest", "jbb", "constructed"}
    assert set(detail["per_label_source"]) == {"human", "model", "constructed"}
    # Every kind of pair is present in the tiny eval set, with an accuracy in [0, 1].
    for kind, result in detail["preference"].items():
        assert result["pairs"] > 0 and 0.0 <= result["accuracy"] <= 1.0, kind
        assert critic["preference"][kind] == result["accuracy"], kind
    assert read_json(root / "metrics" / "detail" / "critic_train.json")["n"] == trained["n"]
    scored = read_jsonl(root / "data" / "critic_eval" / "scored.jsonl")
    assert [r["id"] for r in scored] == [r["id"] for r in labeled]
    roc = (root / "metrics" / "critic_roc.csv").read_text("utf-8").splitlines()
    assert roc[0] == "fpr,tpr,threshold" and roc[-1].startswith("1.0,1.0,")


def test_second_repro_runs_nothing(project: Project) -> None:
    again = run_ok(["dvc", "repro"], project.root, project.cache)
    assert RUNNING.findall(again.stdout) == []
    assert UP_TO_DATE in again.stdout


@contextmanager
def experiment(
    project: Project, assignment: str | list[str], *targets: str
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`dvc exp run -S assignment... [targets]` on the committed baseline: inside the block the
    workspace holds the experiment's outputs, after it the baseline is restored."""
    assignments = [assignment] if isinstance(assignment, str) else assignment
    command = ["dvc", "exp", "run", *(a for x in assignments for a in ("-S", x)), *targets]
    try:
        yield run_ok(command, project.root, project.cache)
    finally:
        run_ok(["git", "checkout", "--", "."], project.root, project.cache)
        run_ok(["dvc", "checkout", "--force"], project.root, project.cache)


def exp_run(
    project: Project, assignment: str | list[str], *targets: str
) -> subprocess.CompletedProcess[str]:
    """An `experiment` whose outputs are not looked at: its dvc output, the baseline restored."""
    with experiment(project, assignment, *targets) as done:
        return done


def test_experiment_reruns_only_what_a_param_touches(project: Project) -> None:
    # One candidate per prompt rather than more: any generate param reruns everything, and
    # fewer rows keep the test fast.
    revisions = project.root / "data" / "revisions.jsonl"
    before = revisions.read_bytes()
    with experiment(project, "generate.num_candidates=1", TARGET) as fewer:
        # critique@revisions reruns only if revise wrote other revisions: with one candidate
        # per prompt, which ones score below revise.threshold depends on the critic's numbers
        # (and the CPU). Read inside the block: after it the baseline's file is back.
        revised = ["critique@revisions"] if revisions.read_bytes() != before else []
    assert RUNNING.findall(fewer.stdout) == [
        "generate",
        "critique@candidates",
        "revise",
        *revised,
        "select",
        "summarize",
    ]
    assert f"{NUM_PROMPTS} candidates for {NUM_PROMPTS} prompts" in fewer.stdout

    margin = exp_run(project, "select.policy=margin", TARGET)
    assert RUNNING.findall(margin.stdout) == ["select", "summarize"]
    assert sorted(SKIPPED.findall(margin.stdout)) == [
        "critique@candidates",
        "critique@revisions",
        "generate",
        "prepare_prompts",
        "revise",
        "train_critic",
    ]
    assert "select (margin)" in margin.stdout

    # A LoRA hyper-parameter reruns training, the fine-tuned side of evaluation and compare;
    # the baseline side, the data pipeline and the critic stay cached.
    rank = exp_run(project, "train.lora_r=4")
    assert sorted(RUNNING.findall(rank.stdout)) == ["compare", "evaluate@finetuned", "train_lora"]

    status = run_ok(["dvc", "status"], project.root, project.cache)
    assert UP_TO_DATE in status.stdout, "the baseline is restored after the experiments"


def test_dpo_runs_through_evaluation(project: Project) -> None:
    """`sft_dpo` runs both of train_lora's phases through the pipeline; `dpo` alone differs only
    inside the stage, where tests/test_train_lora_stage.py trains it (one experiment here
    instead of two saves a minute of the suite). DPO needs preference pairs: the margin policy
    with a near-zero margin pairs the best and the worst candidate of nearly every prompt, so
    the tiny run has some; `sft.cut_replies=whole` keeps them all, since the tiny model's chosen
    replies seldom hold a whole sentence and build_sft leaves such a pair out under `sentence`
    (with 87a8ddd's critic it left out all five)."""
    pairs = ["select.policy=margin", "select.margin=0.01", "sft.cut_replies=whole"]
    done = exp_run(project, ["train.method=sft_dpo", *pairs])
    ran = RUNNING.findall(done.stdout)
    assert {"train_lora", "evaluate@finetuned", "compare"} <= set(ran)
    assert not {"generate", "train_critic", "evaluate@baseline"} & set(ran)
    assert "train_lora: sft_dpo, " in done.stdout


def test_same_params_give_byte_identical_outputs(project: Project, tmp_path: Path) -> None:
    """A second, independent run of every stage reproduces the first byte for byte."""
    cache = make_cache(tmp_path / "cache")
    names = ("c.jsonl", "k.jsonl", "r.jsonl", "rk.jsonl", "s.jsonl", "p.jsonl")
    out = {name: tmp_path / name for name in names}
    run_ok(["python", *GENERATE_ARGS, "--out", str(out["c.jsonl"])], project.root, cache)
    critique = [*CRITIQUE_ARGS, "--candidates", str(out["c.jsonl"]), "--out", str(out["k.jsonl"])]
    run_ok(["python", *critique], project.root, cache)
    revise = ["stages/revise.py", "--critiques", str(out["k.jsonl"])]
    revise += ["--principles", "constitution/principles.yaml"]
    revise += ["--examples", "constitution/revision_examples.yaml", "--out", str(out["r.jsonl"])]
    run_ok(["python", *revise], project.root, cache)
    critique = [*CRITIQUE_ARGS, "--candidates", str(out["r.jsonl"]), "--out", str(out["rk.jsonl"])]
    run_ok(["python", *critique], project.root, cache)
    select = ["stages/select_samples.py", "--critiques", str(out["k.jsonl"])]
    select += ["--revisions", str(out["r.jsonl"]), "--revision-critiques", str(out["rk.jsonl"])]
    select += ["--out", str(out["s.jsonl"]), "--pairs-out", str(out["p.jsonl"])]
    run_ok(["python", *select], project.root, cache)
    metrics, histogram = tmp_path / "pipeline.json", tmp_path / "histogram.csv"
    summarize = ["stages/summarize.py", "--critiques", str(out["k.jsonl"])]
    summarize += ["--selected", str(out["s.jsonl"]), "--metrics-out", str(metrics)]
    summarize += ["--detail-out", str(tmp_path / "detail.json")]
    summarize += ["--histogram-out", str(histogram)]
    run_ok(["python", *summarize], project.root, cache)

    first = project.baseline
    assert out["c.jsonl"].read_bytes() == (first / "data" / "candidates.jsonl").read_bytes()
    assert out["k.jsonl"].read_bytes() == (first / "data" / "critiques.jsonl").read_bytes()
    assert out["r.jsonl"].read_bytes() == (first / "data" / "revisions.jsonl").read_bytes()
    revised = (first / "data" / "revision_critiques.jsonl").read_bytes()
    assert out["rk.jsonl"].read_bytes() == revised
    assert out["s.jsonl"].read_bytes() == (first / "data" / "selected.jsonl").read_bytes()
    assert out["p.jsonl"].read_bytes() == (first / "data" / "preference_pairs.jsonl").read_bytes()
    assert metrics.read_bytes() == (first / "metrics" / "pipeline.json").read_bytes()
    assert histogram.read_bytes() == (first / "metrics" / "score_distribution.csv").read_bytes()


def start(args: list[str], cwd: Path, cache: Path) -> subprocess.Popen[str]:
    """A stage in the background, with the default SIGINT handling whatever pytest inherited."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=stage_env(cache),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_batches(
    process: subprocess.Popen[str], cache: Path, stage: str, batches: int, timeout: float = 300
) -> int:
    """Poll the resume log until `batches` batches are finished; returns how many are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = resume_lines(cache, stage)
        if done >= batches:
            return done
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"{stage} ended before {batches} batches were logged:\n{out}\n{err}")
        time.sleep(0.02)
    process.kill()
    process.communicate()
    pytest.fail(f"{stage}: no {batches} finished batches after {timeout} s")


@dataclass(frozen=True)
class CrashCase:
    stage: str
    kill_after: int
    """Finished batches in the resume log when the stage is killed."""


def stage_command(stage: str, project: Project, out: Path) -> list[str]:
    """The stage's command on the tiny params, reading the baseline's candidates (critique)."""
    if stage == "generate":
        return ["python", *GENERATE_ARGS, "--out", str(out)]
    candidates = project.baseline / "data" / "candidates.jsonl"
    return ["python", *CRITIQUE_ARGS, "--candidates", str(candidates), "--out", str(out)]


# Early: one batch logged. Late: all but the last batch logged, the crash that throws away the
# most work if resuming is broken (and the last moment before the output is written).
LATE = BATCHES - 1


@pytest.mark.parametrize(
    "case",
    [
        CrashCase("generate", 1),
        CrashCase("generate", LATE),
        CrashCase("critique", 1),
        CrashCase("critique", LATE),
    ],
    ids=lambda case: f"{case.stage}-after-{case.kill_after}",
)
def test_kill_9_then_rerun_resumes_to_the_same_output(
    case: CrashCase, project: Project, tmp_path: Path
) -> None:
    """The uninterrupted run to compare with is the baseline `dvc repro` (same params).

    The rerun resumes exactly the batches whose log line was complete at the kill (a line torn
    by the kill is redone) and runs only the others.
    """
    expected = {"generate": "candidates.jsonl", "critique": "critiques.jsonl"}[case.stage]
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "out.jsonl"
    command = stage_command(case.stage, project, out)

    process = start(command, project.root, cache)
    logged = wait_for_batches(process, cache, case.stage, case.kill_after)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert logged < BATCHES, "killed too late: every batch had finished"
    assert not out.exists(), "a killed stage must leave no output"
    finished = resume_lines(cache, case.stage)
    assert BATCHES > finished >= logged >= case.kill_after

    rerun = run_ok(command, project.root, cache)
    match = BATCH_COUNT.search(rerun.stdout)
    assert match, rerun.stdout
    ran, resumed = int(match[1]), int(match[2])
    assert resumed == finished, "every batch logged before the kill is reused, none redone"
    assert ran == BATCHES - finished
    assert out.read_bytes() == (project.baseline / "data" / expected).read_bytes()
    assert resume_logs(cache) == []


def test_ctrl_c_exits_130_with_one_line_and_keeps_finished_batches(
    project: Project, tmp_path: Path
) -> None:
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "out.jsonl"
    process = start(stage_command("generate", project, out), project.root, cache)
    logged = wait_for_batches(process, cache, "generate", 1)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("generate did not exit within 10 s of SIGINT")
    assert time.monotonic() - sent < 10
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    # Progress bars redraw with carriage returns; the message is one line of its own.
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr) if "interrupted" in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("generate: interrupted"), lines[0]
    assert not out.exists()
    assert resume_lines(cache, "generate") >= logged >= 1


def test_unresolvable_model_fails_with_one_line(project: Project, tmp_path: Path) -> None:
    model = "nobody/no-such-model-xyz"
    params = write_params(tmp_path / "params.yaml", {**TINY, "models": {"generator": model}})
    out = tmp_path / "out.jsonl"
    done = run(
        ["python", *GENERATE_ARGS, "--params", str(params), "--out", str(out)],
        project.root,
        make_cache(tmp_path / "cache"),
    )
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("generate: error:") and model in lines[0], lines[0]
    assert not out.exists()
