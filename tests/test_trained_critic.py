"""train_critic's directory (minicc/trained_critic.py): whole or absent, and the method named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_params

from minicc.errors import UserError
from minicc.trained_critic import (
    MARKER,
    PROBE_FILE,
    is_trained_critic,
    recorded_method,
    trained_path,
    write_trained_critic,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_marker_names_the_method_and_the_path_follows_it(tmp_path: Path) -> None:
    write_trained_critic(tmp_path / "c", "probe", lambda d: (d / PROBE_FILE).write_text("{}"))
    assert json.loads((tmp_path / "c" / MARKER).read_text()) == {"method": "probe"}
    assert trained_path(tmp_path / "c", "probe") == tmp_path / "c" / PROBE_FILE
    assert trained_path(tmp_path / "c", "probe").is_file()


def test_a_failed_fill_keeps_the_previous_critic(tmp_path: Path) -> None:
    write_trained_critic(tmp_path / "c", "probe", lambda d: (d / PROBE_FILE).write_text("old"))

    def broken(staging: Path) -> None:
        (staging / PROBE_FILE).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_trained_critic(tmp_path / "c", "lora", broken)
    assert (tmp_path / "c" / PROBE_FILE).read_text() == "old"
    assert trained_path(tmp_path / "c", "probe").is_file()


def test_a_marker_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / MARKER).write_text("not json")
    with pytest.raises(UserError, match="not a trained-critic marker"):
        trained_path(tmp_path / "c", "probe")


def test_a_marker_naming_an_unknown_method_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / MARKER).write_text('{"method": "oracle"}')
    assert is_trained_critic(tmp_path / "c")
    with pytest.raises(UserError, match="unknown method 'oracle'"):
        recorded_method(tmp_path / "c")
    assert not is_trained_critic(tmp_path / "missing")
    with pytest.raises(UserError, match="no trained critic"):
        recorded_method(tmp_path / "missing")


def test_train_critic_with_the_judge_trains_nothing_and_says_so(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"critique": {"method": "judge"}})
    out = tmp_path / "critic"
    result = subprocess.run(
        [
            sys.executable,
            "stages/train_critic.py",
            *("--train", "data/critic/train.jsonl", "--requests", "data/critic/requests.jsonl"),
            *("--principles", "constitution/principles.yaml"),
            *("--instruct-template", "constitution/critic_instruct.yaml"),
            *("--base-template", "constitution/critic_base.yaml"),
            *("--out", str(out), "--metrics-out", str(tmp_path / "m.json")),
            *("--detail-out", str(tmp_path / "d.json"), "--params", str(params)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    assert json.loads((tmp_path / "m.json").read_text()) == {"method": "judge"}
    with pytest.raises(UserError, match="for method 'judge', but critique.method is 'lora'"):
        trained_path(out, "lora")
