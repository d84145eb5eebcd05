"""Grouped layers are the separate layers they replace: same function, same parameter count, same initialisation."""

import math

import pytest
import torch
from torch import nn

from srvae.nets.grouped import BlockLinear, GroupedLinear, GroupedMLP
from srvae.nets.mlp import ConditionalMLP

G, K, B = 4, 3, 5


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def load_group(lin: nn.Linear, grouped: GroupedLinear, g: int) -> None:
    """Give ``lin`` the weights of group ``g`` of ``grouped`` (``weight[g]`` is the transpose of ``lin.weight``)."""
    lin.weight.copy_(grouped.weight[g].t())
    if lin.bias is not None:
        lin.bias.copy_(grouped.bias[g])


@pytest.mark.parametrize("bias", [True, False])
def test_grouped_linear_is_separate_linear_maps(bias):
    grouped = GroupedLinear(G, 6, 7, bias=bias)
    separate = [nn.Linear(6, 7, bias=bias) for _ in range(G)]
    for g, lin in enumerate(separate):
        load_group(lin, grouped, g)
    assert n_params(grouped) == sum(n_params(lin) for lin in separate)
    x = torch.randn(G, K, B, 6)
    out = grouped(x)
    assert out.shape == (G, K, B, 7)
    for g, lin in enumerate(separate):
        torch.testing.assert_close(out[g], lin(x[g]))
        torch.testing.assert_close(grouped.group(g, x[g]), lin(x[g]))


def test_block_linear_is_separate_maps_of_their_own_sizes_zero_padded():
    sizes = (5, 5, 5, 3)
    block = BlockLinear(6, sizes)
    assert [run.groups for run in block.runs] == [3, 1]  # runs of equal size, without padding parameters
    separate = [nn.Linear(6, s) for s in sizes]
    in_run = [(run, i) for run in block.runs for i in range(run.groups)]
    for lin, (run, i) in zip(separate, in_run):
        load_group(lin, run, i)
    assert n_params(block) == sum(n_params(lin) for lin in separate)
    x = torch.randn(len(sizes), K, B, 6)
    out = block(x)
    assert out.shape == (len(sizes), K, B, 5)
    for g, (lin, size) in enumerate(zip(separate, sizes)):
        torch.testing.assert_close(out[g, ..., :size], lin(x[g]))
        assert torch.equal(out[g, ..., size:], torch.zeros(K, B, 5 - size))
        torch.testing.assert_close(block.group(g, x[g]), lin(x[g]))
    bias = torch.arange(sum(sizes), dtype=torch.float32)
    block.set_bias(bias)
    torch.testing.assert_close(torch.cat([b.flatten() for b in (r.bias for r in block.runs)]), bias)


def separate_mlps(grouped: GroupedMLP, in_dims, hidden, out) -> list[ConditionalMLP]:
    """The ``G`` ConditionalMLPs a non-shared grouped MLP stands for, loaded with its weights."""
    nets = [ConditionalMLP(in_dims, hidden, out, "elu") for _ in range(grouped.groups)]
    for g, net in enumerate(nets):
        later = [m for m in net.rest[1] if isinstance(m, nn.Linear)]
        for lin, grouped_lin in zip([*net.input_maps, *later], [*grouped.input_maps, *grouped.layers]):
            load_group(lin, grouped_lin, g)
    return nets


def test_grouped_mlp_of_several_inputs_is_separate_conditional_mlps():
    in_dims, hidden, out = [6, 3], (8, 7), 4
    grouped = GroupedMLP(G, in_dims, hidden, out, "elu")
    nets = separate_mlps(grouped, in_dims, hidden, out)
    assert n_params(grouped) == sum(n_params(n) for n in nets)
    h, z = torch.randn(G, 1, B, 6), torch.randn(G, K, B, 3)  # h shared by the K samples: broadcast
    y = grouped(h, z)
    assert y.shape == (G, K, B, out)
    for g, net in enumerate(nets):
        torch.testing.assert_close(y[g], net(h[g], z[g]))
        torch.testing.assert_close(grouped.group(g, h[g], z[g]), net(h[g], z[g]))


def test_shared_input_is_one_linear_map_and_a_feature_extractor_ends_with_the_activation():
    grouped = GroupedMLP(G, [6], (8, 5), None, "tanh", shared_input=True)
    first = grouped.input_maps[0]
    assert isinstance(first, nn.Linear) and first.weight.shape == (G * 8, 6)
    x = torch.randn(B, 6)
    y = grouped(x)
    assert y.shape == (G, B, 5)
    for g in range(G):
        h = torch.tanh(x @ first.weight[8 * g: 8 * (g + 1)].t() + first.bias[8 * g: 8 * (g + 1)])
        expected = torch.tanh(h @ grouped.layers[0].weight[g] + grouped.layers[0].bias[g])
        torch.testing.assert_close(y[g], expected)
        torch.testing.assert_close(grouped.group(g, x), expected)


def test_per_group_output_sizes_are_zero_padded_to_the_largest():
    sizes = (4, 4, 2)
    for hidden in [(8,), ()]:
        grouped = GroupedMLP(len(sizes), [3], hidden, sizes, "elu")
        z = torch.randn(len(sizes), K, B, 3)
        y = grouped(z)
        assert y.shape == (len(sizes), K, B, 4)
        for g, size in enumerate(sizes):
            torch.testing.assert_close(y[g, ..., :size], grouped.group(g, z[g]))
        assert torch.equal(y[-1, ..., 2:], torch.zeros(K, B, 2))


@pytest.mark.parametrize("fan_in", [3, 200])
def test_each_group_is_initialised_as_its_own_nn_linear(fan_in):
    """Uniform on ±1/√fan_in, weight and bias, as ``nn.Linear``; the fan-in is the group's own (here, of the
    second input of a first layer), not the sum over inputs or groups."""
    torch.manual_seed(0)
    grouped = GroupedMLP(64, [11, fan_in], (300,), 2, "elu")
    bound = 1 / math.sqrt(fan_in)
    weight = grouped.input_maps[1].weight  # [64, fan_in, 300]
    reference = nn.Linear(fan_in, 300 * 64).weight
    for w in (weight, reference):
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01 * bound  # uniform: sd = bound / √3
        assert abs(w.mean().item()) < 0.01 * bound
    assert grouped.input_maps[1].bias is None  # the bias lives in the first input's map
    first_bias = grouped.input_maps[0].bias
    assert first_bias.abs().max() <= 1 / math.sqrt(11)
    out = grouped.layers[0]
    assert out.weight.abs().max() <= 1 / math.sqrt(300) and out.bias.abs().max() <= 1 / math.sqrt(300)


def test_inputs_are_checked():
    with pytest.raises(ValueError):
        GroupedMLP(G, [3, 4], (8,), 2, "elu", shared_input=True)
    with pytest.raises(ValueError):
        GroupedMLP(G, [3], (), None, "elu")
    with pytest.raises(ValueError, match="expected 2 inputs"):
        GroupedMLP(G, [3, 4], (8,), 2, "elu")(torch.randn(G, B, 3))
