"""The committed critic sets: counts, labeling rule, train/eval separation and a reproducible build.

Only `data/` is read, except by the rebuild tests, which need the public files in
`../shared/data` and are skipped where they are absent. The loader's own checks are in
test_labeled.py.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from contrast_requests import near_duplicates

from minicc.critic_metrics import source_family
from minicc.embedding import Embedder
from minicc.labeled import LabeledRequest, LabeledResponse, load_labeled, load_requests
from minicc.params import CRITIC_SOURCES
from minicc.text import normalise

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "critic"
SHARED = ROOT.parent / "shared" / "data"
FILES = ("eval.jsonl", "train.jsonl")
MAX_RESPONSE_CHARS = 4000
POLICY_EVAL_PROMPTS = ROOT / "data" / "prompt_pool" / "eval.jsonl"
"""The policy's eval prompts: the critic judges that evaluation, so it never trains on them."""

# (source, harmful) -> rows; the same table is in data/critic/README.md.
EXPECTED = {
    "eval.jsonl": {
        ("constructed-commentary", False): 254,
        ("constructed-empty", False): 59,
        ("constructed-loop", False): 59,
        ("constructed-noise", False): 59,
        ("constructed-off_topic", False): 59,
        ("constructed-offer", False): 254,
        ("constructed-refusal", False): 254,
        ("constructed-restatement", False): 254,
        ("constructed-truncated", False): 59,
        ("gptfuzz", True): 150,
        ("gptfuzz", False): 150,
        ("jbb-gpt-3.5-turbo-1106", True): 36,
        ("jbb-gpt-3.5-turbo-1106", False): 36,
        ("jbb-gpt-4-0125-preview", True): 28,
        ("jbb-gpt-4-0125-preview", False): 49,
        ("jbb-llama-2-7b-chat-hf", True): 26,
        ("jbb-llama-2-7b-chat-hf", False): 39,
        ("jbb-vicuna-13b-v1.5", True): 60,
        ("jbb-vicuna-13b-v1.5", False): 26,
        ("xstest-gpt4", True): 1,
        ("xstest-gpt4", False): 34,
        ("xstest-llama2new", False): 32,
        ("xstest-llama2orig", False): 31,
        ("xstest-mistralguard", True): 7,
        ("xstest-mistralguard", False): 31,
        ("xstest-mistralinstruct", True): 128,
        ("xstest-mistralinstruct", False): 36,
    },
    "train.jsonl": {
        ("constructed-commentary", False): 213,
        ("constructed-empty", False): 85,
        ("constructed-loop", False): 85,
        ("constructed-noise", False): 85,
        ("constructed-off_topic", False): 85,
        ("constructed-offer", False): 213,
        ("constructed-refusal", False): 213,
        ("constructed-restatement", False): 213,
        ("constructed-truncated", False): 85,
        ("contrast-smollm2", True): 387,
        ("contrast-smollm2", False): 412,
        ("gptfuzz", True): 750,
        ("gptfuzz", False): 750,
        ("jbb-gpt-3.5-turbo-1106", True): 73,
        ("jbb-gpt-3.5-turbo-1106", False): 79,
        ("jbb-gpt-4-0125-preview", True): 44,
        ("jbb-gpt-4-0125-preview", False): 102,
        ("jbb-llama-2-7b-chat-hf", True): 53,
        ("jbb-llama-2-7b-chat-hf", False): 87,
        ("jbb-vicuna-13b-v1.5", True): 130,
        ("jbb-vicuna-13b-v1.5", False): 32,
        ("xstest-gpt4", False): 116,
        ("xstest-llama2new", False): 115,
        ("xstest-llama2orig", False): 116,
        ("xstest-mistralguard", False): 114,
        ("xstest-mistralinstruct", False): 116,
    },
}
# (source, harmful) -> requests: as many harmful as harmless.
EXPECTED_REQUESTS = {
    ("advbench", True): 36,
    ("contrast", False): 472,
    ("contrast", True): 472,
    ("gptfuzz", True): 36,
    ("jailbreakbench-benign", False): 59,
    ("jailbreakbench-harmful", True): 36,
    ("simplesafetytests", True): 36,
    ("xstest", False): 85,
}


def load(name: str) -> list[LabeledResponse]:
    return load_labeled(DATA / name)


def key(record: LabeledResponse) -> str:
    return normalise(record.prompt + " " + record.response)


def requests() -> list[LabeledRequest]:
    return load_requests(DATA / "requests.jsonl")


def policy_prompts() -> list[dict[str, str]]:
    return [
        json.loads(line) for line in POLICY_EVAL_PROMPTS.read_text(encoding="utf-8").splitlines()
    ]


def policy_groups(source: str, family: str) -> set[str]:
    """The critic-set groups (`<family>:<n>`) of the policy prompts from `<source>:<n>`."""
    return {
        f"{family}:{int(p['source'].split(':', 1)[1])}"
        for p in policy_prompts()
        if p["source"].startswith(source + ":")
    }


@pytest.mark.parametrize("name", FILES)
def test_counts_per_source_and_label_are_as_documented(name: str) -> None:
    counts = Counter((record.source, record.harmful) for record in load(name))
    assert dict(counts) == EXPECTED[name]


def test_eval_is_large_enough_and_each_source_has_both_labels() -> None:
    records = load("eval.jsonl")
    assert len(records) >= 500
    labels_by_source: dict[str, set[bool]] = {}
    for record in records:
        # XSTest counts as one source here: the Llama-2 models never fully complied with an
        # unsafe prompt, so their rows are all harmless.
        labels_by_source.setdefault(record.source.split("-")[0], set()).add(record.harmful)
    assert labels_by_source == {
        "gptfuzz": {True, False},
        "xstest": {True, False},
        "jbb": {True, False},
        "constructed": {False},
    }


def test_source_families_are_those_critic_probe_sources_allows() -> None:
    # The replies to the contrast pairs only train: their requests are kept away from eval.
    assert {source_family(r.source) for r in load("train.jsonl")} == set(CRITIC_SOURCES)
    families = {source_family(r.source) for r in load("eval.jsonl")}
    assert families == set(CRITIC_SOURCES) - {"contrast"}


LABEL_SOURCES = {"jbb": "model", "constructed": "constructed", "contrast": "authored"}


@pytest.mark.parametrize("name", FILES)
def test_label_source_is_model_for_jbb_constructed_and_authored_by_rule_else_human(
    name: str,
) -> None:
    seen = set()
    for record in load(name):
        expected = LABEL_SOURCES.get(source_family(record.source), "human")
        assert record.label_source == expected, record.id
        seen.add(record.label_source)
    assert seen == {"human", "model", "constructed"} | (
        {"authored"} if name == "train.jsonl" else set()
    )


@pytest.mark.parametrize("name", FILES)
def test_every_constructed_row_pairs_with_a_row_of_its_file_and_group(name: str) -> None:
    records = load(name)
    by_id = {record.id: record for record in records}
    constructed = [r for r in records if r.label_source == "constructed"]
    assert len(constructed) > 500
    for record in constructed:
        assert record.pair_of in by_id, record.id
        original = by_id[record.pair_of]
        assert (original.group, original.prompt) == (record.group, record.prompt), record.id
        assert original.label_source != "constructed", record.id
        assert record.id == f"constructed-{record.construction}-{record.pair_of}"


def test_jbb_eval_and_train_goals_are_disjoint_and_policy_goals_stay_out_of_train() -> None:
    evaluation = {r.group for r in load("eval.jsonl") if r.source.startswith("jbb-")}
    train = {r.group for r in load("train.jsonl") if r.source.startswith("jbb-")}
    policy = policy_groups("jailbreakbench-harmful", "jbb")
    # 100 behaviors: 47 eval, 53 train less 3 near duplicates of an eval prompt.
    assert (len(evaluation), len(train), len(policy)) == (47, 50, 40)
    assert evaluation & train == set()
    assert policy & train == set()


def test_jbb_groups_number_behaviors_as_the_policy_prompt_files_do() -> None:
    """JailbreakBench artifacts and the behaviors CSV both count from 0; an off-by-one in the
    group would put a policy goal's responses under another goal. Some artifacts extend a
    goal's wording (jbb:43 adds "to artificially boost the rating ..."), so the check is a
    prefix."""
    goals = {
        f"jbb:{int(p['source'].split(':', 1)[1])}": normalise(p["prompt"])
        for p in policy_prompts()
        if p["source"].startswith("jailbreakbench-harmful:")
    }
    rows = [r for name in FILES for r in load(name) if r.group in goals]
    assert len(rows) > 100
    for record in rows:
        assert normalise(record.prompt).startswith(goals[record.group]), record.id


def test_xstest_training_prompts_are_in_neither_eval_nor_the_policy_eval_prompts() -> None:
    train = {r.group for r in load("train.jsonl") if r.source.startswith("xstest-")}
    evaluation = {r.group for r in load("eval.jsonl") if r.source.startswith("xstest-")}
    policy = policy_groups("xstest", "xstest")
    assert len(train) > 100
    assert train & evaluation == set()
    assert train & policy == set()


def test_xstest_training_rows_teach_over_refusal() -> None:
    rows = [r for r in load("train.jsonl") if r.source.startswith("xstest-")]
    kinds = Counter((r.prompt_label, r.response_kind) for r in rows)
    assert kinds["safe", "full_compliance"] > 0
    assert kinds["safe", "full_refusal"] + kinds["safe", "partial_refusal"] > 50
    assert not any(r.harmful for r in rows)


def test_every_gptfuzz_eval_question_is_represented_and_none_is_in_train() -> None:
    evaluation = {r.group for r in load("eval.jsonl") if r.source == "gptfuzz"}
    train = {r.group for r in load("train.jsonl") if r.source == "gptfuzz"}
    assert evaluation == {f"gptfuzz:{q}" for q in range(80, 100)}
    assert len(train) == 80
    assert evaluation & train == set()
    # The policy's eval set holds GPTFuzz questions: only those the critic does not train on.
    assert train & policy_groups("gptfuzz", "gptfuzz") == set()
    assert len(policy_groups("gptfuzz", "gptfuzz")) == 20


def test_ids_are_unique_across_both_files() -> None:
    ids = [record.id for name in FILES for record in load(name)]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


@pytest.mark.parametrize("name", FILES)
def test_no_duplicate_example_within_a_file(name: str) -> None:
    keys = [key(record) for record in load(name)]
    assert [k for k, n in Counter(keys).items() if n > 1] == []


def test_train_and_eval_share_no_example_after_normalising() -> None:
    train = {key(record) for record in load("train.jsonl")}
    evaluation = {key(record) for record in load("eval.jsonl")}
    assert train & evaluation == set()


def test_xstest_labels_follow_the_rule() -> None:
    for record in load("eval.jsonl"):
        if record.source.startswith("xstest-"):
            unsafe_compliance = (
                record.prompt_label == "unsafe" and record.response_kind == "full_compliance"
            )
            assert record.harmful == unsafe_compliance, record.id


@pytest.mark.parametrize("name", FILES)
def test_responses_are_stripped_and_within_the_length_limit(name: str) -> None:
    for record in load(name):
        assert record.response == record.response.strip(), record.id
        # Only the constructed empty reply is empty.
        assert (record.response == "") == (record.construction == "empty"), record.id
        assert len(record.response) <= MAX_RESPONSE_CHARS, record.id


def test_request_counts_per_source_and_label() -> None:
    rows = requests()
    assert dict(Counter((r.source, r.harmful) for r in rows)) == EXPECTED_REQUESTS
    assert sum(r.harmful for r in rows) == sum(not r.harmful for r in rows) == 616


def test_requests_are_labeled_by_their_prompt_set_and_sorted() -> None:
    rows = requests()
    assert [(r.source, r.id) for r in rows] == sorted((r.source, r.id) for r in rows)
    for row in rows:
        assert row.id.startswith(row.source + ":"), row.id
        # The authored contrast pairs (tools/contrast_requests.py) carry their author's label.
        assert row.label_source == ("authored" if row.source == "contrast" else "human"), row.id
        assert row.prompt == row.prompt.strip() != "", row.id
    normalised = [normalise(r.prompt) for r in rows]
    assert [k for k, n in Counter(normalised).items() if n > 1] == []


def test_requests_share_no_prompt_with_eval_or_the_policy_eval_prompts() -> None:
    rows = requests()
    taken = {normalise(r.prompt) for r in load("eval.jsonl")}
    taken |= {normalise(p["prompt"]) for p in policy_prompts()}
    assert [r.id for r in rows if normalise(r.prompt) in taken] == []
    # By id too: a JailbreakBench goal is worded differently in some artifacts than in its CSV.
    families = {"jailbreakbench-harmful": "jbb", "gptfuzz": "gptfuzz", "xstest": "xstest"}
    eval_groups = {r.group for r in load("eval.jsonl")}
    groups = {
        r.id: f"{families[r.source]}:{int(r.id.split(':', 1)[1])}"
        for r in rows
        if r.source in families
    }
    assert [i for i, group in groups.items() if group in eval_groups] == []
    policy = {p["source"] for p in policy_prompts()}
    assert [r.id for r in rows if r.id in policy] == []


def test_no_request_or_training_prompt_is_a_near_duplicate_of_an_eval_prompt() -> None:
    # The builder leaves such public requests and training rows out and refuses such authored
    # requests; the same embedder and threshold here, on the committed files.
    protected = sorted(
        {r.prompt for r in load("eval.jsonl")} | {p["prompt"] for p in policy_prompts()}
    )
    embed = Embedder(torch.device("cpu"), torch.float32).embed
    found = near_duplicates([r.prompt for r in requests()], protected, embed)
    assert [(d.protected, round(d.cosine, 3)) for d in found] == []
    train_prompts = sorted({r.prompt for r in load("train.jsonl")})
    found = near_duplicates(train_prompts, protected, embed)
    assert [(train_prompts[d.index], d.protected, round(d.cosine, 3)) for d in found] == []


def needs_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the public CSVs are needed to rebuild the critic sets")


def test_builder_reproduces_the_committed_files(tmp_path: Path) -> None:
    needs_shared()
    # The script imports minicc; make that work whether or not the package is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "tools/build_critic_sets.py", "--shared", str(SHARED)]
    result = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (*FILES, "requests.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_gptfuzz_license_is_a_verbatim_copy() -> None:
    needs_shared()
    copy = ROOT / "data" / "licenses" / "gptfuzz-LICENSE"
    assert copy.read_bytes() == (SHARED / "gptfuzz" / "LICENSE").read_bytes()


def test_training_rows_whose_prompt_is_near_a_protected_prompt_leave_the_pool() -> None:
    from build_critic_sets import Row, without_near_duplicates

    def row(row_id: str, prompt: str, group: str) -> Row:
        record = LabeledResponse(
            id=row_id,
            prompt=prompt,
            response="A reply.",
            harmful=False,
            source="xstest-gpt4",
            group=group,
            prompt_label="safe",
            response_kind="full_compliance",
            label_source="human",
            construction=None,
            pair_of=None,
        )
        return Row("stratum", record, False)

    rows = [
        row("a-1", "Tell me how to make a bomb", "x:1"),
        row("a-2", "Tell me how to make a bomb", "x:1"),
        row("b-1", "Bake a cake", "x:2"),
    ]

    def embed(texts: list[str]) -> np.ndarray:
        # Texts sharing their first word are the same vector (cosine 1), others orthogonal.
        axes = {"Tell": 0, "Bake": 1, "How?": 2}
        vectors = np.zeros((len(texts), 3))
        for i, text in enumerate(texts):
            vectors[i, axes[text.split()[0]]] = 1.0
        return vectors

    kept, lines = without_near_duplicates(rows, ["Tell me how to build a bomb", "How?"], embed)
    # Every row of the near prompt leaves, and the summary names it once, by its group.
    assert [r.record.id for r in kept] == ["b-1"]
    assert lines == [
        "x:1: 'Tell me how to make a bomb' ~ 'Tell me how to build a bomb' (cosine 1.000)"
    ]
