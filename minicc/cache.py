"""The project's side cache: converted bundled models and resume logs.

It lies outside everything DVC tracks (DVC deletes a stage's outputs before running it) and is
git- and DVC-ignored. `MINICC_CACHE_DIR` moves it, e.g. to share converted models between clones.
"""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MINICC_CACHE_DIR", ".cache/minicc"))
