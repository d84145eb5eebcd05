"""The raster-order block partition of an image (SeRe-VAE, Apostolopoulou et al. 2020, Section 3).

SeRe-VAE cuts the image ``x ∈ {0,1}^D`` into ``L`` blocks ``x_1 … x_L`` and lets stochastic layer ``l``
generate block ``x_l`` only. The paper does not say how the image is cut; this project (``docs/decisions.md``,
"SeRe-VAE") takes raster order with ``ceil(D / L)`` pixels per block and a
smaller last block: ``784 = 9 × 79 + 73`` for ``L = 10``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def block_sizes(data_dim: int, blocks: int) -> tuple[int, ...]:
    """Sizes of ``blocks`` raster blocks of a ``data_dim``-pixel image: ``ceil(D/L)`` each, the last smaller."""
    if blocks < 1 or blocks > data_dim:
        raise ValueError(f"cannot cut {data_dim} pixels into {blocks} blocks")
    size = math.ceil(data_dim / blocks)
    last = data_dim - size * (blocks - 1)
    if last < 1:
        raise ValueError(
            f"{data_dim} pixels in {blocks} blocks of ceil({data_dim}/{blocks}) = {size} leave the last block "
            f"empty; choose another number of blocks"
        )
    return (size,) * (blocks - 1) + (last,)


@dataclass(frozen=True)
class BlockPartition:
    """Splits ``[..., D]`` tensors into their ``L`` raster blocks and joins them back."""

    data_dim: int
    blocks: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return block_sizes(self.data_dim, self.blocks)

    def split(self, x: Tensor) -> list[Tensor]:
        """``[..., D] → [x_1 [..., D_1], …, x_L [..., D_L]]`` (views, no copy)."""
        if x.shape[-1] != self.data_dim:
            raise ValueError(f"expected {self.data_dim} pixels in the last dimension, got {x.shape[-1]}")
        return list(torch.split(x, self.sizes, dim=-1))

    def join(self, blocks: Sequence[Tensor]) -> Tensor:
        """``[x_1, …, x_L] → [..., D]``, the inverse of :meth:`split`."""
        if tuple(b.shape[-1] for b in blocks) != self.sizes:
            raise ValueError(f"block sizes {[b.shape[-1] for b in blocks]} do not match {list(self.sizes)}")
        return torch.cat(list(blocks), dim=-1)
