"""The bundled sentence embedder: unit vectors, order independence, meaning, precision."""

import numpy as np
import pytest
import torch

from minicc.embedding import PACKAGE, Embedder, embedder_id

TEXTS = [
    "How do I bake sourdough bread at home?",
    "What is the best way to make sourdough bread?",
    "1111111111111111111111111111111111111111",
    "",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(torch.device("cpu"), torch.float32)


def test_embeddings_are_unit_vectors_in_input_order(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    reversed_vectors = embedder.embed(TEXTS[::-1], batch_size=1)
    assert np.allclose(vectors, reversed_vectors[::-1], atol=1e-5)


def test_a_paraphrase_is_closer_than_noise(embedder: Embedder) -> None:
    question, paraphrase, noise, _ = embedder.embed(TEXTS)
    assert question @ paraphrase > 0.7
    assert question @ noise < question @ paraphrase - 0.4


def test_bfloat16_stays_close_to_float32(embedder: Embedder) -> None:
    reduced = Embedder(torch.device("cpu"), torch.bfloat16)
    cosines = (embedder.embed(TEXTS) * reduced.embed(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.999


def test_the_id_names_the_package_and_its_version() -> None:
    assert embedder_id().startswith(f"all-MiniLM-L6-v2@{PACKAGE}==")


def test_loading_shows_no_progress_bar_and_leaves_the_setting_as_it_was(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    Embedder(torch.device("cpu"), torch.float32)
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()
