"""Run a stage script unchanged, but freeze it at a chosen point so that a test can kill it there.

    python tests/pause_stage.py FLAG POINT stages/<script>.py <the script's options>

POINT is `backward:N` (right after the N-th `Accelerator.backward`, i.e. in the middle of the
training loop) or `replace:NAME` (when `os.replace` is about to move something onto a path
named NAME, before it does). At that point the runner creates the file FLAG and sleeps; the
test waits for FLAG, then sends SIGKILL. Without this, a kill "while training" would depend on
timing: a tiny model trains in well under a second.
"""

import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import accelerate


def _freeze(flag: Path) -> None:
    flag.touch()
    time.sleep(3600)


def _pause_after_backward(flag: Path, count: int) -> None:
    original = accelerate.Accelerator.backward
    calls = 0

    def backward(self: accelerate.Accelerator, loss: Any, **kwargs: Any) -> None:
        nonlocal calls
        original(self, loss, **kwargs)
        calls += 1
        if calls == count:
            _freeze(flag)

    accelerate.Accelerator.backward = backward  # type: ignore[method-assign]


def _pause_before_replace(flag: Path, name: str) -> None:
    original = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == name:
            _freeze(flag)
        original(src, dst, **kwargs)

    os.replace = replace


def main() -> None:
    flag, point, script = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    kind, _, value = point.partition(":")
    if kind == "backward":
        _pause_after_backward(flag, int(value))
    elif kind == "replace":
        _pause_before_replace(flag, value)
    else:
        raise SystemExit(f"unknown pause point {point!r}: use backward:N or replace:NAME")
    sys.argv = sys.argv[3:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
