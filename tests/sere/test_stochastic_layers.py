"""SeRe-VAE's layers: conditional MLP, amortised Gaussian priors, residual posterior, residual data layers."""

import pytest
import torch
import torch.nn.functional as F

from srvae.distributions import SCALE_FLOOR, inverse_positive, positive
from srvae.nets.mlp import ConditionalMLP
from srvae.sere.stochastic_layers import (
    BLOCKWISE_ROWS,
    AmortisedGaussianPriors,
    ResidualBernoulliLayers,
    ResidualGaussianPosterior,
)

K, B, N, H = 3, 4, 5, 6


def zero_output(last: torch.nn.Module) -> None:
    """Make a network output exactly zero: zero its last linear map (``last``: weight and bias)."""
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()


def test_conditional_mlp_is_an_mlp_of_the_concatenated_inputs():
    torch.manual_seed(0)
    net = ConditionalMLP([H, N], hidden=(8,), out_dim=2, act="tanh")
    concat = torch.nn.Linear(H + N, 8)
    with torch.no_grad():
        concat.weight.copy_(torch.cat([m.weight for m in net.input_maps], dim=1))
        concat.bias.copy_(net.input_maps[0].bias)
    h, z = torch.randn(B, H), torch.randn(K, B, N)
    out = net(h, z)  # h is shared by the K samples: broadcast, not repeated
    expected = net.rest(concat(torch.cat([h.expand(K, B, H), z], dim=-1)))
    assert out.shape == (K, B, 2)
    torch.testing.assert_close(out, expected)
    assert sum(p.numel() for p in net.input_maps.parameters()) == sum(p.numel() for p in concat.parameters())


def test_conditional_mlp_without_inputs_is_a_learned_constant():
    net = ConditionalMLP([], hidden=(8,), out_dim=3, act="tanh")
    net.init_output(2.0, slice(1, None))
    out = net()
    assert torch.equal(out, torch.tensor([0.0, 2.0, 2.0]))
    out.sum().backward()
    assert torch.equal(net.constant.grad, torch.ones(3))
    with pytest.raises(ValueError):
        net(torch.zeros(3))


def test_inverse_positive_inverts_positive():
    assert positive(torch.tensor(inverse_positive(1.0)), SCALE_FLOOR).item() == pytest.approx(1.0)


def test_first_prior_is_a_free_standard_normal_at_initialisation():
    priors = AmortisedGaussianPriors(3, N, context_dim=N, hidden=(8,), act="elu")
    mean, std = priors.layer(0, None)
    assert mean.shape == std.shape == (N,)
    torch.testing.assert_close(mean, torch.zeros(N))
    torch.testing.assert_close(std, torch.ones(N))
    assert priors.free.shape == (1, 2 * N)  # free parameters only, for the first layer
    # without a context every layer is a free standard normal at initialisation, and has nothing else
    free = AmortisedGaussianPriors(3, N, context_dim=0, hidden=(8,), act="elu")
    assert [p.shape for p in free.parameters()] == [(3, 2 * N)] and free.context_dims == (0, 0, 0)
    for l in range(3):
        torch.testing.assert_close(free.layer(l, torch.randn(K, B, N))[1], torch.ones(N))


def test_amortised_prior_depends_on_the_code_and_keeps_scales_positive():
    torch.manual_seed(0)
    priors = AmortisedGaussianPriors(3, N, context_dim=N, hidden=(8,), act="elu")
    assert priors.context_dims == (0, N, N)
    z = torch.randn(K, B, N)
    mean, std = priors.layer(1, z)
    assert mean.shape == std.shape == (K, B, N)
    assert not torch.allclose(priors.layer(1, z + 1.0)[0], mean)
    _, extreme = priors.layer(2, 1e4 * torch.randn(K, B, N))  # no overflow to inf, no zero scale
    assert torch.isfinite(extreme).all() and torch.all(extreme >= SCALE_FLOOR)
    with pytest.raises(ValueError):
        priors.layer(1, None)


def test_priors_of_all_layers_at_once_equal_each_layer_alone():
    torch.manual_seed(0)
    priors = AmortisedGaussianPriors(4, N, context_dim=N, hidden=(8, 7), act="elu")
    contexts = torch.randn(3, K, B, N)  # z_1..z_3 condition layers 2..4
    mean, std = priors(contexts)
    assert mean.shape == std.shape == (4, K, B, N)
    for l in range(4):
        m, s = priors.layer(l, contexts[l - 1] if l else None)
        torch.testing.assert_close(mean[l], m.expand(K, B, N))
        torch.testing.assert_close(std[l], s.expand(K, B, N))


def test_posterior_is_first_estimate_from_code_plus_residual_from_evidence():
    torch.manual_seed(0)
    post = ResidualGaussianPosterior(N, context_dim=N, hidden=(8,), act="elu")
    h, z = torch.randn(B, post.evidence_features), torch.randn(K, B, N)
    mean, std = post(h, z)
    assert mean.shape == std.shape == (K, B, N) and torch.all(std > 0)
    assert not torch.allclose(post(h + 1.0, z)[0], mean)  # the evidence corrects the estimate
    assert not torch.allclose(post(h, z + 1.0)[0], mean)
    zero_output(post.residual[-1][-1])  # without the residual: the first estimate, a function of z alone
    first_mean, first_pre_std = post.first(z).chunk(2, dim=-1)
    mean0, std0 = post(h, z)
    torch.testing.assert_close(mean0, first_mean)
    torch.testing.assert_close(std0, positive(first_pre_std, SCALE_FLOOR))
    torch.testing.assert_close(post(h + 1.0, z)[0], mean0)


def test_posterior_whose_first_estimate_is_the_prior_adds_the_residual_to_the_priors_output():
    torch.manual_seed(0)
    priors = AmortisedGaussianPriors(2, N, context_dim=N, hidden=(8,), act="elu")
    post = ResidualGaussianPosterior(N, context_dim=N, hidden=(8,), act="elu", first="prior")
    assert post.first is None  # no network of its own
    h, z = torch.randn(B, post.evidence_features), torch.randn(K, B, N)
    with pytest.raises(ValueError, match="first estimate is the prior"):
        post(h, z)
    raw = priors.raw(1, z)
    mean, std = post(h, z, raw)
    assert not torch.allclose(post(h + 1.0, z, raw)[0], mean)  # the evidence corrects the estimate
    zero_output(post.residual[-1][-1])  # without the residual the posterior is the prior itself
    for a, b in zip(post(h, z, raw), priors.layer(1, z)):
        torch.testing.assert_close(a, b)


def test_first_posterior_sees_its_encoder_alone():
    post = ResidualGaussianPosterior(N, context_dim=0, hidden=(8,), act="elu")
    h = torch.randn(B, post.evidence_features)
    assert post.first is None and post.context_map is None
    mean, std = post(h, None)
    assert mean.shape == (B, N)
    torch.testing.assert_close(post(h, torch.randn(K, B, N))[0], mean)  # a context it was built without is cut


def test_data_layer_is_first_estimate_plus_residual_on_the_previous_block():
    torch.manual_seed(0)
    data = ResidualBernoulliLayers((9, 9, 7), N, hidden=(8,), act="elu")
    z, x_prev = torch.randn(K, B, N), torch.bernoulli(torch.full((B, 9), 0.5))
    logits = data.layer(2, z, x_prev)
    assert logits.shape == (K, B, 7)
    assert not torch.allclose(data.layer(2, z, 1.0 - x_prev), logits)
    zero_output(data.residual.layers[-1])
    torch.testing.assert_close(data.layer(2, z, x_prev), data.first.group(2, z))
    with pytest.raises(ValueError):
        data.layer(2, z, None)


def test_data_layers_of_all_blocks_at_once_equal_each_block_alone():
    torch.manual_seed(0)
    sizes = (9, 9, 9, 7)
    data = ResidualBernoulliLayers(sizes, N, hidden=(8, 6), act="elu", data_mean=torch.rand(sum(sizes)))
    codes, x = torch.randn(len(sizes), K, B, N), torch.bernoulli(torch.full((B, sum(sizes)), 0.5))
    logits = data.logits(codes, x)  # block layout, the last block zero-padded
    blocks = x.split(sizes, dim=-1)
    assert logits.shape == (len(sizes), K, B, 9)
    expected = [data.layer(l, codes[l], blocks[l - 1] if l else None) for l in range(len(sizes))]
    for l, size in enumerate(sizes):
        torch.testing.assert_close(logits[l, ..., :size], expected[l])
    log_p = sum(-F.binary_cross_entropy_with_logits(g, b.expand_as(g), reduction="none").sum(-1)
                for g, b in zip(expected, blocks))
    torch.testing.assert_close(data.log_likelihood(codes, x), log_p)
    many = codes.repeat(1, BLOCKWISE_ROWS // B, 1, 1)  # enough rows to run block by block: the same function
    torch.testing.assert_close(data.log_likelihood(many, x), log_p.repeat(BLOCKWISE_ROWS // B, 1))
    for bad in [(9, 7, 9), (9, 9, 10)]:
        with pytest.raises(ValueError, match="same size"):
            ResidualBernoulliLayers(bad, N, hidden=(8,), act="elu")


def test_first_data_layer_starts_at_the_data_marginal():
    data_mean = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.3, 0.7, 0.4])
    data = ResidualBernoulliLayers((3, 3, 1), N, hidden=(8,), act="elu", data_mean=data_mean)
    assert data.residual.groups == 2  # block 1 has no previous block
    biases = torch.cat([run.bias.flatten() for run in data.first.layers[-1].runs])
    torch.testing.assert_close(biases, torch.logit(data_mean))


def test_init_output_sets_bias_and_shrinks_the_weights_into_those_outputs():
    torch.manual_seed(0)
    net = ConditionalMLP([H], hidden=(8,), out_dim=4, act="tanh")
    last = net.rest[-1][-1]
    weight = last.weight.detach().clone()
    net.init_output(torch.tensor([1.0, 2.0]), slice(2, None), weight_scale=0.5)
    torch.testing.assert_close(last.bias[2:], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(last.weight[2:], 0.5 * weight[2:])
    torch.testing.assert_close(last.weight[:2], weight[:2])
