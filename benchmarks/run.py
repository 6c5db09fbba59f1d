"""Benchmark the pipeline against naive baselines on this machine; see benchmarks/README.md.

    python benchmarks/run.py --out benchmarks/results.json          # `make bench`
    python benchmarks/run.py --quick --out /tmp/bench-quick.json     # smoke run, ~1-2 minutes

Runs on the committed params.yaml and its generator/critic models. Results are written after
every section, so an interrupted run keeps what it measured.
"""

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

import bench_inference
import bench_precision
import bench_stages
import torch
import transformers
import typer

from minicc.constitution import Constitution, load_constitution
from minicc.models import load_model, resolve_model
from minicc.params import Params, load_params
from minicc.records import Prompt, load_prompts
from minicc.seeding import seed_everything
from minicc.trained_critic import PROBE_FILE

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("generate", "critique", "scaling", "precision", "memory", "repro")
DVC_YAML = Path("dvc.yaml")
CRITIQUE_STAGE = "critique@candidates"
"""The critique stage whose critic files (principles, templates, probe) the benchmarks read."""


@dataclass(frozen=True)
class Settings:
    prompts: int
    """generate: prompts for the pipeline side (each with `candidates_per_prompt` samples)."""
    candidates_per_prompt: int
    baseline_prompts: int
    """generate: prompts for the one-at-a-time HF generate() baseline."""
    batch_sizes: list[int]
    critique_candidates: int
    critique_baseline_candidates: int
    scaling: list[int]
    """Numbers of prompts (1 candidate each) for the generate + critique wall-time curve."""
    precision_prompts: int
    """precision: prompts (2 answers each) generated, critiqued and trained on per precision."""
    memory_prompts: int


# The full run with `--scaling 25,50,100,200` took 5.3 minutes on this idle 2-core CPU in
# bfloat16 (about 14 in float32); see benchmarks/README.md.
FULL = Settings(24, 2, 6, [1, 4, 16, 64], 48, 6, [25, 50, 100], 8, 12)
QUICK = Settings(4, 2, 2, [1, 4], 8, 2, [5, 10], 2, 3)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected positive integers, got {text!r}")
    return values


def describe_machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
        if line.startswith("model name")
    ]
    meminfo = Path("/proc/meminfo")
    total_kib = next(
        (
            int(line.split()[1])
            for line in (meminfo.read_text().splitlines() if meminfo.is_file() else [])
            if line.startswith("MemTotal:")
        ),
        None,
    )

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    return {
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(total_kib * 1024 / 1e9, 1) if total_kib else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": git("status", "--porcelain") not in ("", "unknown"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def prompt_pool(kind: str) -> list[Prompt]:
    """A committed prompt pool, `train` or `eval`, as dvc.yaml passes it to prepare_prompts.

    The pools are in git, so the benchmarks run in a fresh clone without `dvc repro`; the
    generate stage reads prepare_prompts' capped draw from the training pool.
    """
    options = bench_stages.stage_options(DVC_YAML, "prepare_prompts")
    return load_prompts(Path(options[f"{kind}-pool"]))


def critique_constitution(params: Params) -> Constitution:
    """The constitution in the configured style, from the critique stage's files in dvc.yaml."""
    style = params.critique.style
    files = bench_stages.stage_options(DVC_YAML, CRITIQUE_STAGE)
    template = files["instruct-template" if style == "instruct" else "base-template"]
    return load_constitution(Path(files["principles"]), Path(template), style)


def trained_probe_file() -> Path | None:
    """The critic probe file train_critic wrote (in the directory dvc.yaml names), if it has
    run for method probe."""
    path = Path(bench_stages.stage_options(DVC_YAML, CRITIQUE_STAGE)["trained-critic"])
    return path / PROBE_FILE if (path / PROBE_FILE).is_file() else None


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(staging, path)


def run_in_process(
    params: Params,
    settings: Settings,
    sections: set[str],
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """generate, critique and scaling: one loaded model (two if the critic differs)."""
    loaded = load_model(params.models.generator, params.models)
    critic_loaded = (
        loaded
        if params.models.critic == params.models.generator
        else load_model(params.models.critic, params.models)
    )
    results["model"] = {"generator": loaded.model_id, "critic": critic_loaded.model_id}
    constitution = critique_constitution(params)
    prompts = prompt_pool("train")
    # The eval pool only lengthens the scaling benchmark's prompts.
    pool = prompts + prompt_pool("eval")
    chosen = bench_inference.mixed_prompts(prompts, settings.prompts)
    per_prompt = settings.candidates_per_prompt
    with tempfile.TemporaryDirectory(prefix="minicc-bench-logs-") as logs:
        candidates = None
        if "generate" in sections:
            generated = bench_inference.bench_generate(
                loaded, chosen, per_prompt, settings.baseline_prompts, params, Path(logs)
            )
            candidates = generated.candidates
            results["generate"] = generated.summary
            results["generate"]["batch_sizes"] = bench_inference.bench_batch_sizes(
                loaded, prompts, per_prompt, settings.batch_sizes, params
            )
            results["generate_speedup"] = generated.summary["speedup"]
            save()
        if "critique" in sections:
            if candidates is None:
                candidates, *_ = bench_inference.run_pipeline_generation(
                    loaded, chosen, per_prompt, params, Path(logs)
                )
            fixed = bench_inference.cycle_candidates(candidates, settings.critique_candidates)
            results["critique"] = bench_inference.bench_critique(
                critic_loaded,
                constitution,
                params,
                fixed,
                settings.critique_baseline_candidates,
                Path(logs),
                trained_probe_file(),
            )
            results["critique_speedup"] = results["critique"]["speedup"]
            save()
        if "scaling" in sections:
            results["scaling"] = bench_inference.bench_scaling(
                loaded, critic_loaded, constitution, params, pool, settings.scaling, Path(logs)
            )
            save()


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nminicc benchmark ({results['preset']}) - {m['cpu']}, {m['usable_cores']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads), load {m['load_average_start']}"
    )
    if "generate" in results:
        g = results["generate"]
        print(
            f"generate   pipeline {_fmt(g['pipeline']['tokens_per_s'], ' tok/s'):>13}   "
            f"baseline {_fmt(g['baseline']['tokens_per_s'], ' tok/s'):>13}   "
            f"speedup {_fmt(g['speedup'], 'x', 2)}"
        )
        sizes = "  ".join(
            f"{row['batch_size']}: {_fmt(row['tokens_per_s'])}" for row in g["batch_sizes"]
        )
        print(f"           tok/s by batch size   {sizes}")
    if "critique" in results:
        c = results["critique"]
        b = c["baseline"]
        print(
            f"critique   pipeline {_fmt(c['pipeline']['candidates_per_s'], ' cand/s', 2):>13}   "
            f"baseline {_fmt(b['candidates_per_s'], ' cand/s', 2):>13}   "
            f"speedup {_fmt(c['speedup'], 'x', 1)}   "
            f"(free-text scores parsed: {b['parsed']}/{b['candidates']})"
        )
        if c["probe"] is not None and "skipped" in c["probe"]:
            print(f"           probe skipped: {c['probe']['skipped']}")
        elif c["probe"] is not None:
            print(f"           probe {_fmt(c['probe']['candidates_per_s'], ' cand/s', 2):>16}")
    for row in results.get("scaling", []):
        print(
            f"scaling    {row['prompts']:>4} prompts   {_fmt(row['seconds'], ' s'):>9}   "
            f"{_fmt(row['seconds_per_prompt'], ' s/prompt', 3)}"
        )
    if "precision" in results:
        ratio = results["precision"]["bfloat16_speedup"]
        print(
            f"precision  bfloat16 vs float32: generate {_fmt(ratio['generate'], 'x', 2)}   "
            f"critic {_fmt(ratio['critic'], 'x', 2)}   train {_fmt(ratio['train'], 'x', 2)}"
        )
    if "memory" in results:
        per_stage = ", ".join(
            f"{s['stage']} {s['peak_rss_gb']:.2f}" for s in results["memory"]["stages"]
        )
        print(f"memory     peak RSS {_fmt(results['peak_rss_gb'], ' GB', 2)}   ({per_stage})")
    if "repro" in results:
        r = results["repro"]
        skipped = f"   (no-op skipped: {r['noop_skipped']})" if r["noop_skipped"] else ""
        print(
            f"dvc repro  full {_fmt(r['repro_s'], ' s')}   "
            f"no-op {_fmt(r['noop_repro_s'], ' s', 2)}{skipped}"
        )
    print(f"total      {_fmt(results['total_s'], ' s')}\n")


def main(
    out: Path = typer.Option(Path("benchmarks/results.json"), help="Where to write the JSON."),
    quick: bool = typer.Option(False, "--quick", help="Tiny smoke run (about 1-2 minutes)."),
    prompts: int | None = typer.Option(None, help="generate: pipeline prompts [24; quick 4]."),
    candidates_per_prompt: int | None = typer.Option(None, help="generate: samples each [2]."),
    baseline_prompts: int | None = typer.Option(None, help="generate: baseline prompts [6; 2]."),
    batch_sizes: str | None = typer.Option(None, help="complete() batch sizes [1,4,16,64; 1,4]."),
    critique_candidates: int | None = typer.Option(None, help="critique: pipeline [48; 8]."),
    critique_baseline: int | None = typer.Option(None, help="critique: baseline [6; 2]."),
    scaling: str | None = typer.Option(None, help="scaling: prompt counts [25,50,100; 5,10]."),
    precision_prompts: int | None = typer.Option(None, help="precision: prompts each [8; 2]."),
    memory_prompts: int | None = typer.Option(None, help="memory: prompts per stage run [12; 3]."),
    only: str = typer.Option(",".join(SECTIONS), help="Comma-separated sections to run."),
    full_repro: bool = typer.Option(
        False, "--full-repro", help="Time `dvc repro -f` (reruns every stage, rewrites outputs)."
    ),
    repro_seconds: float | None = typer.Option(
        None, help="Record a full `dvc repro` time measured elsewhere, as repro_s."
    ),
    threads: int | None = typer.Option(
        None, help="torch threads, also for the stage processes [torch's default: one per core]."
    ),
) -> None:
    if full_repro and repro_seconds is not None:
        raise typer.BadParameter("give either --full-repro or --repro-seconds, not both")
    sections = {s.strip() for s in only.split(",") if s.strip()}
    if not sections or sections - set(SECTIONS):
        raise typer.BadParameter(f"--only takes some of {', '.join(SECTIONS)}; got {only!r}")
    overrides: dict[str, Any] = {
        "prompts": prompts,
        "candidates_per_prompt": candidates_per_prompt,
        "baseline_prompts": baseline_prompts,
        "batch_sizes": _int_list(batch_sizes) if batch_sizes else None,
        "critique_candidates": critique_candidates,
        "critique_baseline_candidates": critique_baseline,
        "scaling": _int_list(scaling) if scaling else None,
        "precision_prompts": precision_prompts,
        "memory_prompts": memory_prompts,
    }
    settings = replace(
        QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None}
    )
    for field in fields(Settings):
        value = getattr(settings, field.name)
        if (min(value) if isinstance(value, list) else value) < 1:
            raise typer.BadParameter(f"--{field.name.replace('_', '-')} must be >= 1")
    if threads is not None:
        if threads < 1:
            raise typer.BadParameter("--threads must be >= 1")
        # On a CPU shared with other work, fewer threads than cores can be several times
        # faster: every layer waits for its slowest thread, and a busy core stalls it.
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    out = out.resolve()
    # Paths in params.yaml and dvc.yaml are relative to the repository root.
    os.chdir(REPO)
    transformers.logging.set_verbosity_error()
    started = perf_counter()
    params = load_params(Path("params.yaml"))
    seed_everything(params.seed)
    results: dict[str, Any] = {
        "generate_speedup": None,
        "critique_speedup": None,
        "bfloat16_speedup": None,
        "peak_rss_gb": None,
        "repro_s": repro_seconds,
        "noop_repro_s": None,
        "preset": "quick" if quick else "full",
        "settings": asdict(settings),
        "params": {
            "models": asdict(params.models),
            "generate": asdict(params.generate),
            "critique": asdict(params.critique),
        },
        "machine": describe_machine(),
    }

    def save() -> None:
        results["total_s"] = round(perf_counter() - started, 1)
        write_json(out, results)

    if sections & {"generate", "critique", "scaling"}:
        run_in_process(params, settings, sections, results, save)
    if "precision" in sections:
        with tempfile.TemporaryDirectory(prefix="minicc-bench-precision-") as scratch:
            results["precision"] = bench_precision.bench_precision(
                params,
                critique_constitution(params),
                bench_inference.mixed_prompts(prompt_pool("train"), settings.precision_prompts),
                Path(scratch),
            )
        results["bfloat16_speedup"] = results["precision"]["bfloat16_speedup"]
        save()
    if "memory" in sections:
        # The stages share this cache's converted models: convert them first if missing.
        for spec in {params.models.generator, params.models.critic}:
            resolve_model(spec, params.models)
        with tempfile.TemporaryDirectory(prefix="minicc-bench-stages-") as scratch:
            results["memory"] = bench_stages.bench_memory(
                DVC_YAML,
                Path("params.yaml"),
                bench_inference.mixed_prompts(prompt_pool("train"), settings.memory_prompts),
                Path(scratch) / "run",
            )
        results["peak_rss_gb"] = results["memory"]["peak_rss_gb"]
        save()
    if "repro" in sections:
        results["repro"] = bench_stages.bench_repro(REPO, full_repro, repro_seconds)
        results["repro_s"] = results["repro"]["repro_s"]
        results["noop_repro_s"] = results["repro"]["noop_repro_s"]
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    save()
    print_table(results)
    print(f"results -> {out}")


if __name__ == "__main__":
    typer.run(main)
