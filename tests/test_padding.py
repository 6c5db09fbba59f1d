"""Position ids and pooled means of left-padded batches (minicc/padding.py)."""

import torch

from minicc.padding import masked_mean, unpadded_positions


def test_positions_start_at_each_rows_first_real_token() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert unpadded_positions(mask).tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 3, 4],
        [0, 0, 0, 0, 0],
    ]


def test_positions_of_a_row_do_not_depend_on_its_padding() -> None:
    alone = unpadded_positions(torch.tensor([[1, 1, 1]]))
    padded = unpadded_positions(torch.tensor([[0, 0, 1, 1, 1]]))
    assert torch.equal(padded[:, 2:], alone)


def test_masked_mean_leaves_padding_out() -> None:
    hidden = torch.tensor([[[100.0, -100.0], [1.0, 2.0], [3.0, 6.0]]])
    mean = masked_mean(hidden, torch.tensor([[0, 1, 1]]))
    assert torch.equal(mean, torch.tensor([[2.0, 4.0]]))


def test_masked_mean_of_a_row_without_tokens_is_zero_not_nan() -> None:
    hidden = torch.ones(2, 3, 4)
    mean = masked_mean(hidden, torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert torch.equal(mean, torch.tensor([[0.0] * 4, [1.0] * 4]))


def test_masked_mean_keeps_the_hidden_states_dtype() -> None:
    hidden = torch.ones(1, 2, 3, dtype=torch.float64)
    assert masked_mean(hidden, torch.tensor([[1, 1]])).dtype == torch.float64
