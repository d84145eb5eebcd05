"""SeRe-VAE's layers: conditional MLP, amortised Gaussian prior, residual posterior, residual data layer."""

import pytest
import torch

from srvae.distributions import SCALE_FLOOR, inverse_positive, positive
from srvae.nets.mlp import ConditionalMLP
from srvae.sere.stochastic_layers import AmortisedGaussian, ResidualBernoulli, ResidualGaussianPosterior

K, B, N, H = 3, 4, 5, 6


def zero_output(net: ConditionalMLP) -> None:
    """Make ``net`` output exactly zero (its last linear map's weight and bias)."""
    last = net.rest[-1][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


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
    prior = AmortisedGaussian(N, context_dim=0, hidden=(8,), act="elu")
    mean, std = prior(None)
    assert mean.shape == std.shape == (N,)
    torch.testing.assert_close(mean, torch.zeros(N))
    torch.testing.assert_close(std, torch.ones(N))
    assert len(list(prior.parameters())) == 1  # free parameters only


def test_amortised_prior_depends_on_the_code_and_keeps_scales_positive():
    torch.manual_seed(0)
    prior = AmortisedGaussian(N, context_dim=N, hidden=(8,), act="elu")
    z = torch.randn(K, B, N)
    mean, std = prior(z)
    assert mean.shape == std.shape == (K, B, N)
    assert not torch.allclose(prior(z + 1.0)[0], mean)
    _, extreme = prior(1e4 * torch.randn(K, B, N))  # no overflow to inf, no zero scale
    assert torch.isfinite(extreme).all() and torch.all(extreme >= SCALE_FLOOR)
    with pytest.raises(ValueError):
        prior(None)


def test_posterior_is_first_estimate_from_code_plus_residual_from_evidence():
    torch.manual_seed(0)
    post = ResidualGaussianPosterior(N, evidence_dim=H, context_dim=N, hidden=(8,), act="elu")
    h, z = torch.randn(B, H), torch.randn(K, B, N)
    mean, std = post(h, z)
    assert mean.shape == std.shape == (K, B, N) and torch.all(std > 0)
    assert not torch.allclose(post(h + 1.0, z)[0], mean)  # the evidence corrects the estimate
    assert not torch.allclose(post(h, z + 1.0)[0], mean)
    zero_output(post.residual)  # without the residual: the first estimate, a function of z alone
    first_mean, first_pre_std = post.first(z).chunk(2, dim=-1)
    mean0, std0 = post(h, z)
    torch.testing.assert_close(mean0, first_mean)
    torch.testing.assert_close(std0, positive(first_pre_std, SCALE_FLOOR))
    torch.testing.assert_close(post(h + 1.0, z)[0], mean0)


def test_posterior_whose_first_estimate_is_the_prior_adds_the_residual_to_the_priors_output():
    torch.manual_seed(0)
    prior = AmortisedGaussian(N, context_dim=N, hidden=(8,), act="elu")
    post = ResidualGaussianPosterior(N, evidence_dim=H, context_dim=N, hidden=(8,), act="elu", first="prior")
    assert post.first is None  # no network of its own
    h, z = torch.randn(B, H), torch.randn(K, B, N)
    with pytest.raises(ValueError, match="first estimate is the prior"):
        post(h, z)
    raw = prior.raw(z)
    mean, std = post(h, z, raw)
    assert not torch.allclose(post(h + 1.0, z, raw)[0], mean)  # the evidence corrects the estimate
    zero_output(post.residual)  # without the residual the posterior is the prior itself
    for a, b in zip(post(h, z, raw), prior(z)):
        torch.testing.assert_close(a, b)


def test_first_posterior_sees_its_encoder_alone():
    post = ResidualGaussianPosterior(N, evidence_dim=H, context_dim=0, hidden=(8,), act="elu")
    h = torch.randn(B, H)
    assert post.first is None
    mean, std = post(h, None)
    assert mean.shape == (B, N)
    torch.testing.assert_close(post(h, torch.randn(K, B, N))[0], mean)  # a context it was built without is cut


def test_data_layer_is_first_estimate_plus_residual_on_the_previous_block():
    torch.manual_seed(0)
    data = ResidualBernoulli(N, block_dim=7, prev_block_dim=9, hidden=(8,), act="elu")
    z, x_prev = torch.randn(K, B, N), torch.bernoulli(torch.full((B, 9), 0.5))
    logits = data(z, x_prev)
    assert logits.shape == (K, B, 7)
    assert not torch.allclose(data(z, 1.0 - x_prev), logits)
    zero_output(data.residual)
    torch.testing.assert_close(data(z, x_prev), data.first(z))
    with pytest.raises(ValueError):
        data(z, None)


def test_first_data_layer_starts_at_the_data_marginal():
    block_mean = torch.tensor([0.1, 0.5, 0.9])
    data = ResidualBernoulli(N, block_dim=3, prev_block_dim=0, hidden=(8,), act="elu", block_mean=block_mean)
    assert data.residual is None  # block 1 has no previous block
    torch.testing.assert_close(data.first.rest[-1][-1].bias, torch.logit(block_mean))


def test_init_output_sets_bias_and_shrinks_the_weights_into_those_outputs():
    torch.manual_seed(0)
    net = ConditionalMLP([H], hidden=(8,), out_dim=4, act="tanh")
    last = net.rest[-1][-1]
    weight = last.weight.detach().clone()
    net.init_output(torch.tensor([1.0, 2.0]), slice(2, None), weight_scale=0.5)
    torch.testing.assert_close(last.bias[2:], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(last.weight[2:], 0.5 * weight[2:])
    torch.testing.assert_close(last.weight[:2], weight[:2])
