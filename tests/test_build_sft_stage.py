"""The build_sft stage end to end on tiny files: `sft.refusal_pairs` adds its pairs to the pairs
files, each on its prompt's side of the split, and counts them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

REPLIES = [
    ("adv-1", "adversarial", "I'm sorry, but I can't help with that. Here is why."),
    ("adv-2", "adversarial", "I can't help with that."),
    *[(f"coop-{n}", "cooperative", f"Answer number {n} to the question.") for n in range(8)],
]


def _candidate(reply: dict[str, object], finish_reason: str, num_tokens: int) -> dict[str, object]:
    """A row of the candidates file: `reply`'s fields and how its generation ended."""
    return {
        **reply,
        "num_tokens": num_tokens,
        "finish_reason": finish_reason,
        "generator": "g",
        "system_prompt": "none",
    }


def _write_inputs(folder: Path, kind: str, pairs: list[dict[str, object]] | None = None) -> Path:
    candidates, selected = [], []
    for prompt_id, category, response in REPLIES:
        reply = {
            "prompt_id": prompt_id,
            "candidate_id": f"{prompt_id}/0",
            "prompt": f"request {prompt_id}",
            "category": category,
            "response": response,
        }
        candidates.append(_candidate(reply, "eos", num_tokens=12))
        selected.append(
            {
                **reply,
                "score": 4.5,
                "safe": True,
                "role": "chosen",
                "policy": "best",
                "revision_of": None,
            }
        )
    for pair in pairs or []:
        chosen = {
            "prompt_id": pair["prompt_id"],
            "candidate_id": pair["chosen_id"],
            "prompt": pair["prompt"],
            "category": pair["category"],
            "response": pair["chosen"],
        }
        candidates.append(_candidate(chosen, "length", num_tokens=64))
    for name, rows in (
        ("candidates", candidates),
        ("selected", selected),
        ("pairs", pairs or []),
    ):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "revisions.jsonl").write_text("")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sft"]["refusal_pairs"] = kind
    params["sft"]["val_ratio"] = 0.2
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return params_file


def _build_sft(folder: Path, params_file: Path) -> subprocess.CompletedProcess[str]:
    args = ["--selected", "selected.jsonl", "--candidates", "candidates.jsonl"]
    args += ["--revisions", "revisions.jsonl", "--pairs", "pairs.jsonl"]
    args += ["--train-out", "train.jsonl", "--val-out", "val.jsonl"]
    args += ["--pairs-train-out", "pairs_train.jsonl", "--pairs-val-out", "pairs_val.jsonl"]
    args += ["--metrics-out", "sft.json", "--detail-out", "detail.json"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "build_sft.py"),
            *args,
            "--params",
            str(params_file),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("kind", "expected"), [("none", 0), ("harmless", 8), ("mirrored", 16)])
def test_refusal_pairs_join_the_pairs_files_on_their_prompts_side(
    tmp_path: Path, kind: str, expected: int
) -> None:
    done = _build_sft(tmp_path, _write_inputs(tmp_path, kind))
    pairs = {
        "train": _rows(tmp_path / "pairs_train.jsonl"),
        "val": _rows(tmp_path / "pairs_val.jsonl"),
    }
    examples = {"train": _rows(tmp_path / "train.jsonl"), "val": _rows(tmp_path / "val.jsonl")}
    assert json.loads((tmp_path / "sft.json").read_text())["refusal_pairs"] == expected
    assert f"({expected} of them sft.refusal_pairs {kind};" in done.stdout
    assert sum(len(part) for part in pairs.values()) == expected
    refusals = {"I'm sorry, but I can't help with that.", "I can't help with that."}
    for side in ("train", "val"):
        prompts = {example["prompt_id"] for example in examples[side]}
        for pair in pairs[side]:
            assert pair["prompt_id"] in prompts  # the pair follows its prompt's example
            # A trimmed refusal, as SFT trains it, on whichever side its prompt asks for.
            refused = pair["chosen" if str(pair["prompt_id"]).startswith("adv-") else "rejected"]
            assert refused in refusals


def _cut_pair(prompt_id: str, chosen: str) -> dict[str, object]:
    return {
        "prompt": f"request {prompt_id}",
        "chosen": chosen,
        "rejected": "Here is how to do the harmful thing, step by",
        "prompt_id": prompt_id,
        "category": "cooperative",
        "chosen_id": f"{prompt_id}/9",
        "rejected_id": f"{prompt_id}/0",
        "chosen_score": 4.5,
        "rejected_score": 1.5,
    }


def test_select_pairs_train_their_cut_chosen_replies_to_a_whole_sentence(tmp_path: Path) -> None:
    pairs = [
        _cut_pair("coop-0", "Boil it for nine minutes. Then cool it in col"),
        _cut_pair("coop-1", "Steps:\n\n1. Fill a pot with water and bring it to the"),
    ]
    done = _build_sft(tmp_path, _write_inputs(tmp_path, "none", pairs))
    written = _rows(tmp_path / "pairs_train.jsonl") + _rows(tmp_path / "pairs_val.jsonl")
    # The first is cut to its last whole sentence; the second has none and is left out.
    assert written == [{**pairs[0], "chosen": "Boil it for nine minutes."}]
    metrics = json.loads((tmp_path / "sft.json").read_text())
    assert metrics["select_pairs_trimmed"] == 1
    assert metrics["select_pairs_without_end_of_turn"] == 1
    assert "1 with the chosen reply trimmed and 1 left out" in done.stdout
