"""Raster block partition of the image (docs/decisions.md: L blocks of ceil(D/L) pixels, the last one smaller)."""

import math

import pytest
import torch

from srvae.sere.partition import BlockPartition, block_sizes


def test_mnist_ten_blocks_is_nine_of_79_and_one_of_73():
    assert block_sizes(784, 10) == (79,) * 9 + (73,)


@pytest.mark.parametrize("data_dim, blocks", [(784, 1), (784, 4), (784, 7), (784, 16), (10, 4), (5, 5)])
def test_sizes_cover_the_image_with_ceil_sized_blocks(data_dim, blocks):
    sizes = block_sizes(data_dim, blocks)
    assert len(sizes) == blocks and sum(sizes) == data_dim
    assert all(s == math.ceil(data_dim / blocks) for s in sizes[:-1])
    assert 1 <= sizes[-1] <= sizes[0]


@pytest.mark.parametrize("data_dim, blocks", [(10, 6), (3, 4), (784, 0)])
def test_impossible_partitions_are_refused(data_dim, blocks):
    with pytest.raises(ValueError):
        block_sizes(data_dim, blocks)


def test_split_is_raster_order_and_join_inverts_it():
    part = BlockPartition(784, 10)
    x = torch.arange(3 * 2 * 784.0).reshape(3, 2, 784)  # leading dimensions are kept
    blocks = part.split(x)
    assert [b.shape for b in blocks] == [(3, 2, s) for s in part.sizes]
    assert torch.equal(blocks[0], x[..., :79])
    assert torch.equal(blocks[4], x[..., 4 * 79 : 5 * 79])
    assert torch.equal(blocks[-1], x[..., 9 * 79 :])
    assert torch.equal(part.join(blocks), x)


def test_wrong_sizes_are_refused():
    part = BlockPartition(784, 10)
    with pytest.raises(ValueError):
        part.split(torch.zeros(2, 783))
    with pytest.raises(ValueError):
        part.join(part.split(torch.zeros(2, 784))[::-1])
