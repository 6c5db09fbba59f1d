"""dvc.yaml declares what each stage reads and writes, so `dvc repro` reruns exactly what a change
touches: every minicc module a stage script imports (transitively), every path its command passes,
every params key its code reads. An undeclared dependency means a stale output that DVC calls
up to date.

Everything here is static (yaml and ast); nothing is imported from the stage scripts.
"""

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC: dict[str, Any] = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
DEFINITIONS: dict[str, dict[str, Any]] = DVC["stages"]
PARAMS: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
SECTION_CLASSES = {
    "ModelsParams": "models",
    "GenerateParams": "generate",
    "CritiqueParams": "critique",
    "SelectParams": "select",
    "SftParams": "sft",
    "TrainParams": "train",
    "EvaluateParams": "evaluate",
}


_TEMPLATE = re.compile(r"\$\{\s*(key|item\.(\w+))\s*\}")


def _fill(value: Any, key: str, item: dict[str, Any]) -> Any:
    """`${key}` and `${item.x}` of a foreach stage replaced, recursively, as DVC does."""
    if isinstance(value, str):
        return _TEMPLATE.sub(lambda m: key if m.group(2) is None else str(item[m.group(2)]), value)
    if isinstance(value, list):
        return [_fill(v, key, item) for v in value]
    if isinstance(value, dict):
        return {_fill(k, key, item): _fill(v, key, item) for k, v in value.items()}
    return value


def expand(definitions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stages as DVC runs them: a `foreach` (mapping) definition becomes `name@key` stages."""
    stages: dict[str, dict[str, Any]] = {}
    for name, definition in definitions.items():
        if "foreach" not in definition:
            stages[name] = definition
            continue
        for key, item in definition["foreach"].items():
            stages[f"{name}@{key}"] = _fill(definition["do"], key, item)
    return stages


STAGES = expand(DEFINITIONS)


def entry_path(entry: str | dict[str, Any]) -> str:
    """A deps/outs/metrics/plots entry is a path or a one-key mapping of a path to options."""
    if isinstance(entry, str):
        return entry
    (path,) = entry
    return str(path)


def paths(stage: dict[str, Any], *kinds: str) -> set[str]:
    return {entry_path(e) for kind in kinds for e in stage.get(kind) or []}


def outputs(stage: dict[str, Any]) -> set[str]:
    return paths(stage, "outs", "metrics", "plots")


def script_of(stage: dict[str, Any]) -> str:
    """The stage's script, which its command runs as a module (`python -m stages.<name>`)."""
    tokens = shlex.split(stage["cmd"])
    assert tokens[:2] == ["python", "-m"] and tokens[2].startswith("stages."), stage["cmd"]
    return tokens[2].replace(".", "/") + ".py"


def options(stage: dict[str, Any]) -> dict[str, str]:
    """`--name value` pairs of the command, in order; anything else fails the test."""
    tokens = shlex.split(stage["cmd"])[3:]
    assert len(tokens) % 2 == 0, stage["cmd"]
    pairs = dict(zip(tokens[::2], tokens[1::2], strict=True))
    assert all(
        name.startswith("--") and not value.startswith("--") for name, value in pairs.items()
    )
    return pairs


NAME_OPTIONS = {"--model"}
"""Options that take a name (evaluate's `--model baseline`), not a path."""


def is_output_option(name: str) -> bool:
    return name == "--out" or name.endswith("-out")


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_path(module: str) -> str | None:
    """`minicc.x` -> `minicc/x.py` when that file exists (a name imported from a module is not)."""
    relative = module.replace(".", "/")
    if (ROOT / f"{relative}.py").is_file():
        return f"{relative}.py"
    if (ROOT / relative / "__init__.py").is_file():
        return f"{relative}/__init__.py"
    return None


def direct_minicc_imports(path: Path) -> set[str]:
    """Files of the minicc modules `path` imports, at any depth of the file (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(parse(path)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: `from .x import y` inside the package
                package = path.relative_to(ROOT).parent.parts
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "minicc" or name.startswith("minicc."):
                module = module_path(name)
                if module is not None:
                    found.add(module)
    return found


def transitive_minicc_imports(script: str) -> set[str]:
    """Every minicc module file the script loads, following imports through minicc."""
    seen: set[str] = set()
    pending = direct_minicc_imports(ROOT / script)
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.add(module)
            pending |= direct_minicc_imports(ROOT / module)
    # The package's __init__ runs on every import; it is held to a docstring (test below), so a
    # change to it cannot change results and it need not be a dependency.
    return seen - {"minicc/__init__.py"}


def is_code(path: str) -> bool:
    return path.startswith(("stages/", "minicc/"))


STAGE_NAMES = sorted(STAGES)


def test_every_stage_script_is_used_by_one_stage() -> None:
    scripts = sorted(script_of(d.get("do", d)) for d in DEFINITIONS.values())
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py"))
    assert scripts == on_disk


def test_package_init_holds_only_a_docstring() -> None:
    body = parse(ROOT / "minicc" / "__init__.py").body
    assert len(body) <= 1
    assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_script_is_a_dependency(name: str) -> None:
    script = script_of(STAGES[name])
    assert (ROOT / script).is_file()
    assert script in paths(STAGES[name], "deps")


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_imported_minicc_module_is_a_dependency(name: str) -> None:
    imported = transitive_minicc_imports(script_of(STAGES[name]))
    missing = sorted(imported - paths(STAGES[name], "deps"))
    assert not missing, f"stage {name!r} imports {missing} but dvc.yaml does not list them"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_no_code_dependency_is_declared_that_the_stage_does_not_import(name: str) -> None:
    """An unused dep only costs needless reruns, but dvc.yaml promises exact declarations."""
    imported = transitive_minicc_imports(script_of(STAGES[name]))
    declared = {p for p in paths(STAGES[name], "deps") if p.startswith("minicc/")}
    unused = sorted(declared - imported)
    assert not unused, f"stage {name!r} lists {unused} in deps but never imports them"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_command_paths_are_declared(name: str) -> None:
    """Inputs passed on the command line are deps; `--out`/`--*-out` paths are outputs."""
    stage = STAGES[name]
    for option, value in options(stage).items():
        if option in NAME_OPTIONS:
            continue
        assert not Path(value).is_absolute(), f"{option} {value}"
        if is_output_option(option):
            assert value in outputs(stage), f"{option} {value} is not an out, metric or plot"
        else:
            assert value in paths(stage, "deps"), f"{option} {value} is not a dep"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_declared_data_paths_are_passed_on_the_command_line(name: str) -> None:
    """Paths live in dvc.yaml only: a declared data file the command does not pass would have to
    be hard-coded in the script."""
    stage = STAGES[name]
    passed = set(options(stage).values())
    data_deps = {p for p in paths(stage, "deps") if not is_code(p)}
    assert sorted(data_deps - passed) == []
    assert sorted(outputs(stage) - passed) == []


def test_every_data_dependency_exists_or_is_produced_by_a_stage() -> None:
    produced = {path for stage in STAGES.values() for path in outputs(stage)}
    for name, stage in STAGES.items():
        for dep in paths(stage, "deps"):
            assert dep in produced or (ROOT / dep).exists(), f"{name}: {dep}"


def option_aliases() -> dict[str, ast.expr]:
    """The `Name = Annotated[T, typer.Option(...)]` aliases minicc/cli.py gives the stages."""
    return {
        node.targets[0].id: node.value
        for node in parse(ROOT / "minicc" / "cli.py").body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Subscript)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "Annotated"
    }


def typer_option(annotation: ast.expr | None, aliases: dict[str, ast.expr]) -> ast.Call | None:
    """The `typer.Option(...)` call of an `Annotated[T, typer.Option(...)]` annotation, written
    out or through a minicc/cli.py alias."""
    if isinstance(annotation, ast.Name) and annotation.id in aliases:
        annotation = aliases[annotation.id]
    if not (isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple)):
        return None
    option = annotation.slice.elts[1]
    return option if isinstance(option, ast.Call) else None


def script_options(script: str) -> tuple[set[str], set[str]]:
    """(all option names, required option names) of the Typer `main` of a stage script: a
    parameter is `Annotated[T, typer.Option(...)]`, required when it has no default."""
    main = next(
        node
        for node in parse(ROOT / script).body
        if isinstance(node, ast.FunctionDef) and node.name == "main"
    )
    aliases = option_aliases()
    arguments = main.args.args
    defaults: list[ast.expr | None] = [None] * (len(arguments) - len(main.args.defaults))
    defaults += main.args.defaults
    names: set[str] = set()
    required: set[str] = set()
    for arg, default in zip(arguments, defaults, strict=True):
        call = typer_option(arg.annotation, aliases)
        assert call is not None, f"{script}: {arg.arg} is not an Annotated typer.Option"
        given = [
            a.value
            for a in call.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--")
        ]
        option = given[0] if given else "--" + arg.arg.replace("_", "-")
        names.add(option)
        if default is None:
            required.add(option)
    return names, required


def test_script_options_are_read_through_the_cli_aliases() -> None:
    """Guards the parsing above: aliases resolve to their option names and `--params` is not
    required where a default is given."""
    names, required = script_options("stages/critique.py")
    assert {"--principles", "--trained-critic", "--params", "--candidates"} <= names
    assert "--principles" in required and "--params" not in required


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_command_options_match_the_script(name: str) -> None:
    names, required = script_options(script_of(STAGES[name]))
    given = set(options(STAGES[name]))
    assert sorted(given - names) == [], "options the script does not define"
    assert sorted(required - given) == [], "required options the command does not pass"


def params_entries(stage: dict[str, Any]) -> list[str]:
    entries: list[str] = []
    for entry in stage.get("params") or []:
        if isinstance(entry, str):
            entries.append(entry)
        else:
            ((file, keys),) = entry.items()
            assert file == "params.yaml", f"only params.yaml holds parameters, not {file}"
            entries.extend(keys)
    return entries


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_declared_params_exist_in_params_yaml(name: str) -> None:
    for entry in params_entries(STAGES[name]):
        node: Any = PARAMS
        for part in entry.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: {entry} not in params.yaml"
            node = node[part]


def attribute_chains(tree: ast.AST, base: str) -> set[tuple[str, ...]]:
    """Longest `base.a.b` attribute chains in `tree`, without the base: {("a", "b"), ...}."""
    inner = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
    }
    chains: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.insert(0, current.attr)
            current = current.value
        if isinstance(current, ast.Name) and current.id == base:
            chains.add(tuple(parts))
    return chains


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def module_scope(module: str) -> dict[str, Definition | tuple[str, str]]:
    """Top-level names of a file: its own functions and classes, and what it imports from minicc
    (as `(module file, name)`)."""
    scope: dict[str, Definition | tuple[str, str]] = {}
    for node in parse(ROOT / module).body:
        if isinstance(node, Definition):
            scope[node.name] = node
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minicc."):
            source = module_path(node.module or "")
            if source is not None:
                for alias in node.names:
                    scope[alias.asname or alias.name] = (source, alias.name)
    return scope


def reachable_definitions(script: str) -> list[Definition]:
    """minicc functions and classes the script can reach by name, following calls through minicc
    (a reached class brings all its methods). Static, so it sees through no indirection."""
    scopes = {script: module_scope(script)}
    reached: dict[tuple[str, str], Definition] = {}
    pending: list[tuple[str, ast.AST]] = [(script, parse(ROOT / script))]
    while pending:
        module, tree = pending.pop()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Name):
                continue
            target = scopes[module].get(node.id)
            if isinstance(target, tuple):
                source, name = target
                scopes.setdefault(source, module_scope(source))
                target, module_of_target = scopes[source].get(name), source
            else:
                module_of_target = module
            if isinstance(target, Definition) and (module_of_target, target.name) not in reached:
                reached[(module_of_target, target.name)] = target
                pending.append((module_of_target, target))
    return list(reached.values())


def params_reads(script: str) -> set[tuple[str, ...]]:
    """What a stage reads from params: `params.x.y` in the script, plus `arg.y` wherever a minicc
    function it reaches takes a section object as an annotated argument `arg: XParams`."""
    reads = attribute_chains(parse(ROOT / script), "params")
    for definition in reachable_definitions(script):
        for function in ast.walk(definition):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for arg in function.args.args + function.args.kwonlyargs:
                hint = arg.annotation
                if isinstance(hint, ast.Name) and hint.id in SECTION_CLASSES:
                    section = SECTION_CLASSES[hint.id]
                    reads |= {
                        (section, *chain[:1]) for chain in attribute_chains(function, arg.arg)
                    }
    return reads


# Reads the analysis finds but the stage never makes: reaching a class brings all its methods,
# and train_critic builds a judge-style `Critic` only to read hidden features (no probe exists
# yet), never scoring with it, so the judge's verdict rules cannot change its output.
NEVER_READ_AT_RUN_TIME = {
    "train_critic": {"critique.combine", "critique.min_digit_mass", "critique.safe_threshold"}
}


@pytest.mark.parametrize("name", sorted(NEVER_READ_AT_RUN_TIME))
def test_exempt_reads_are_still_found(name: str) -> None:
    """A stale exemption would hide a real undeclared read later."""
    found = {".".join(read[:2]) for read in params_reads(script_of(STAGES[name]))}
    assert NEVER_READ_AT_RUN_TIME[name] <= found


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_params_the_code_reads_are_declared(name: str) -> None:
    declared = set(params_entries(STAGES[name])) | NEVER_READ_AT_RUN_TIME.get(name, set())
    reads = params_reads(script_of(STAGES[name]))
    for read in sorted(reads):
        section, *rest = read
        if rest:
            key = f"{section}.{rest[0]}"
            assert section in declared or key in declared, f"{name} reads {key}"
        else:
            assert section in declared or any(d.startswith(f"{section}.") for d in declared), (
                f"{name} reads params.{section}"
            )


def test_params_reads_are_found() -> None:
    """Guards the analysis above against silently finding nothing."""
    generate = params_reads(script_of(STAGES["generate"]))
    assert {("seed",), ("models", "generator"), ("models", "device")} <= generate
    assert ("select", "policy") in params_reads(script_of(STAGES["select"]))
    critique = script_of(STAGES["critique@candidates"])
    assert not any(read[0] == "generate" for read in params_reads(critique))


CRITIC_STAGES = ["train_critic", "critique@candidates", "critique@revisions", "critic_eval"]


@pytest.mark.parametrize("name", CRITIC_STAGES)
def test_the_critic_reads_its_own_seed_not_the_policys(name: str) -> None:
    """`dvc exp run -S seed=N` must leave the critic (the yardstick) as it is."""
    reads = params_reads(script_of(STAGES[name]))
    assert ("critic_seed",) in reads and ("seed",) not in reads
    assert "seed" not in params_entries(STAGES[name])


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_metrics_and_plots_are_not_cached(name: str) -> None:
    for kind in ("metrics", "plots"):
        for entry in STAGES[name].get(kind) or []:
            assert isinstance(entry, dict), f"{name}: {kind} {entry} needs `cache: false`"
            ((path, settings),) = entry.items()
            assert settings.get("cache") is False, f"{name}: {kind} {path} needs `cache: false`"


def test_top_level_plots_draw_stage_outputs() -> None:
    plotted = {path for stage in STAGES.values() for path in paths(stage, "plots", "metrics")}
    for definition in DVC.get("plots") or []:
        ((_, spec),) = definition.items()
        y = spec.get("y")
        files = set(y) if isinstance(y, dict) else set()
        assert files, f"plot {definition} must name its data file in `y`"
        assert files <= plotted, f"plot {definition} draws a file no stage declares as a plot"


def test_foreach_stages_are_expanded() -> None:
    """Guards the expansion: the evaluate sides differ exactly by the adapter."""
    baseline, finetuned = STAGES["evaluate@baseline"], STAGES["evaluate@finetuned"]
    assert "models/lora-sft" in paths(finetuned, "deps")
    assert "models/lora-sft" not in paths(baseline, "deps")
    assert options(finetuned)["--adapter"] == "models/lora-sft"
    assert "--adapter" not in options(baseline)
    assert outputs(baseline) == {"data/eval/baseline.jsonl"}


def test_every_stage_imports_the_minicc_of_the_checkout_it_runs_in(tmp_path: Path) -> None:
    """`dvc exp run --queue` runs each experiment in a copy of the repository. Run as a script,
    a stage imported the editable install's minicc (the workspace's code, edited meanwhile) and
    not the copy's, whose hashes dvc.lock records; one queued run failed so."""
    copy = tmp_path / "copy"
    (copy / "minicc").mkdir(parents=True)
    (copy / "stages").mkdir()
    (copy / "minicc" / "__init__.py").write_text("", "utf-8")
    (copy / "stages" / "which_minicc.py").write_text(
        "import minicc\n\nprint(minicc.__file__)\n", "utf-8"
    )
    for stage in STAGES.values():
        script_of(stage)  # asserts the `python -m stages.<name>` form
    done = subprocess.run(
        [sys.executable, "-m", "stages.which_minicc"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(done.stdout.strip()) == copy / "minicc" / "__init__.py"
