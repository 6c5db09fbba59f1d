"""Out-of-process benchmarks: peak memory of each stage script, and `dvc repro` wall time.

The stage commands come from dvc.yaml (paths live there only): every `data/` and `metrics/`
path is moved into a scratch directory, the prompt file there holds a few prompts, and each
stage gets a copy of params.yaml. Peak RSS is read per stage with `os.wait4`, which
returns that one child's resource usage (RUSAGE_CHILDREN would be the maximum over all
children so far), inside a small wrapper process (see `_WRAPPER`).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

from minicc.cache import cache_root
from minicc.jsonl import write_records
from minicc.records import Prompt
from minicc.yaml_file import read_yaml

MEMORY_STAGES = (
    "generate",
    "critique@candidates",
    "revise",
    "critique@revisions",
    "select",
    "summarize",
)
"""The stages that make the data set; training and evaluation are not measured here."""

_MOVED = ("data/", "metrics/")
"""Argument prefixes of the pipeline's own files, relocated into the scratch directory.
`models/` stays: the critique stage reads the trained critic probe there (run
`dvc repro train_critic` first), and none of MEMORY_STAGES writes into it."""


def _relocate(argument: str, work: Path) -> str:
    """The pipeline's own paths under `work`, keeping their folders (metrics/pipeline.json and
    metrics/detail/pipeline.json are two files); the folder is made here."""
    if not argument.startswith(_MOVED):
        return argument
    moved = work / argument
    moved.parent.mkdir(parents=True, exist_ok=True)
    return str(moved)


_TEMPLATE = re.compile(r"\$\{\s*(key|item\.(\w+))\s*\}")


def _stages(dvc_yaml: Path) -> dict[str, Any]:
    """Stages by the names DVC gives them: a `foreach` stage becomes `name@key` stages, its
    `${key}` and `${item.x}` filled in (only the command is read here)."""
    stages: dict[str, Any] = {}
    for name, definition in read_yaml(dvc_yaml)["stages"].items():
        if "foreach" not in definition:
            stages[name] = definition
            continue
        for key, item in definition["foreach"].items():

            def fill(match: re.Match[str], key: str = key, item: Any = item) -> str:
                return key if match.group(2) is None else str(item[match.group(2)])

            do = definition["do"]
            stages[f"{name}@{key}"] = {**do, "cmd": _TEMPLATE.sub(fill, do["cmd"])}
    return stages


def stage_options(dvc_yaml: Path, stage: str) -> dict[str, str]:
    """The `--name value` options of one stage's command, e.g. its input paths."""
    arguments = shlex.split(_stages(dvc_yaml)[stage]["cmd"])
    return {
        name.removeprefix("--"): value
        for name, value in zip(arguments, arguments[1:], strict=False)
        if name.startswith("--")
    }


def stage_commands(dvc_yaml: Path, work: Path, params_file: Path) -> list[tuple[str, list[str]]]:
    """The commands of MEMORY_STAGES from dvc.yaml, run by this interpreter on scratch paths."""
    stages = _stages(dvc_yaml)
    commands = []
    for name in MEMORY_STAGES:
        stage = stages[name]
        program, *arguments = shlex.split(stage["cmd"])
        if program != "python":
            raise ValueError(f"{dvc_yaml}: stage {name!r} does not start with `python`: {program}")
        command = [sys.executable, *(_relocate(a, work) for a in arguments)]
        if "params" in stage:
            command += ["--params", str(params_file)]
        commands.append((name, command))
    return commands


def scratch_cache(work: Path) -> Path:
    """A private MINICC_CACHE_DIR (own resume logs) that shares the converted models."""
    models = (cache_root() / "models").resolve()
    models.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(models, target_is_directory=True)
    return cache


_WRAPPER = """
import json, os, subprocess, sys
report, command = sys.argv[1], sys.argv[2:]
process = subprocess.Popen(command)
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
with open(report, "w") as handle:
    json.dump({"returncode": process.returncode, "maxrss": usage.ru_maxrss}, handle)
"""
"""Runs one command and records its peak RSS. A forked child starts with its parent's RSS as
its high-water mark (Linux keeps it across exec), so the stage must be forked from this small
process, not from the benchmark, which holds a loaded model."""


def run_measured(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run one child to completion: seconds, peak RSS (GB) and exit code; output goes to `log`."""
    report = log.with_suffix(".rusage.json")
    start = perf_counter()
    with log.open("wb") as sink:
        wrapper = [sys.executable, "-c", _WRAPPER, str(report), *command]
        subprocess.run(wrapper, env=env, stdout=sink, stderr=subprocess.STDOUT, check=True)
    seconds = perf_counter() - start
    measured = json.loads(report.read_text(encoding="utf-8"))
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "seconds": round(seconds, 3),
        "peak_rss_gb": round(measured["maxrss"] * scale / 1e9, 3),
        "returncode": measured["returncode"],
    }


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def bench_memory(
    dvc_yaml: Path, params_yaml: Path, prompts: list[Prompt], work: Path
) -> dict[str, Any]:
    """Peak RSS of every stage, run as its own process on a small prompt file."""
    work.mkdir(parents=True)
    prompt_file = Path(_relocate(stage_options(dvc_yaml, "generate")["prompts"], work))
    write_records(prompt_file, prompts)
    params_file = work / "params.yaml"
    shutil.copyfile(params_yaml, params_file)
    env = {
        **os.environ,
        "MINICC_CACHE_DIR": str(scratch_cache(work)),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TQDM_DISABLE": "1",
    }
    stages = []
    for name, command in stage_commands(dvc_yaml, work, params_file):
        log = work / f"{name}.log"
        measured = run_measured(command, env, log)
        if measured["returncode"] != 0:
            raise RuntimeError(
                f"stage {name} exited with {measured['returncode']}: {shlex.join(command)}\n"
                + _tail(log)
            )
        stages.append({"stage": name, **measured, "summary": _tail(log, 1)})
    return {
        "prompts": len(prompts),
        "stages": stages,
        "peak_rss_gb": max(s["peak_rss_gb"] for s in stages),
    }


def _dvc(repo: Path) -> tuple[str, dict[str, str]]:
    """The environment's dvc, with its bin directory first on PATH so stages run its python."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return str(bin_dir / "dvc"), env


def _timed(command: list[str], repo: Path, env: dict[str, str]) -> float:
    start = perf_counter()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"`{shlex.join(command)}` exited with {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return round(seconds, 3)


def bench_repro(repo: Path, full: bool, recorded: float | None) -> dict[str, Any]:
    """`dvc repro` wall times: full (`-f`, only when asked) and no-op.

    The no-op run happens only when `dvc status` says the pipeline is up to date: otherwise
    `dvc repro` would rerun stages and rewrite the repository's outputs.
    """
    dvc, env = _dvc(repo)
    result: dict[str, Any] = {
        "repro_s": recorded,
        "repro_source": "--repro-seconds" if recorded is not None else None,
        "noop_repro_s": None,
        "noop_skipped": None,
    }
    if full:
        result["repro_s"] = _timed([dvc, "repro", "-f"], repo, env)
        result["repro_source"] = "measured: dvc repro -f"
    status = subprocess.run(
        [dvc, "status", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    if status.returncode != 0:
        # e.g. another `dvc repro` holds the repository's lock: record why, measure nothing.
        reason = (status.stderr.strip() or status.stdout.strip()).splitlines()
        result["noop_skipped"] = f"dvc status failed: {reason[0] if reason else status.returncode}"
        return result
    changed = json.loads(status.stdout or "{}")
    if changed:
        result["noop_skipped"] = (
            f"pipeline not up to date (dvc status lists {', '.join(sorted(changed))}); "
            "run `make repro` first"
        )
    else:
        result["noop_repro_s"] = _timed([dvc, "repro"], repo, env)
    return result
