"""Arithmetic on left-padded batches that several readers of hidden states share.

Batches are left-padded (`encode_batch`), so a row's first real token is not at index 0: the
position ids and the pooled mean must come from the attention mask, or padding would shift the
positions (and a row's states) and leak into the mean.
"""

import torch


def unpadded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that keep every real token of a left-padded `mask` (batch, length) where
    it would be without padding: 0 for the row's first real token. Padding gets 0 too; the mask
    hides it."""
    return (mask.cumsum(dim=-1) - 1).clamp_min(0)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (batch, length, width) over the positions where `mask` (batch, length)
    is 1; a row without any such position gives zeros rather than NaN."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
