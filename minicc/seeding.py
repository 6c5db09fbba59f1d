"""All seeding happens here, so that the same params give byte-identical outputs."""

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys: str) -> int:
    """A 63-bit seed that depends only on the global seed and the given keys.

    Seeding each unit of work (a batch of prompts) from its own key makes a resumed run draw
    exactly the numbers an uninterrupted run would have drawn for that unit.
    """
    material = "\x1f".join([str(seed), *keys]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every accelerator) from one number."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
