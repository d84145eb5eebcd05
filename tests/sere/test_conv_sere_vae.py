"""The convolutional SeRe-VAE: interface shapes, what each data layer sees, ε-space weights, sampling, and the MLP
SeRe-VAE's dense blocks on z_{l-1}."""

from __future__ import annotations

import pytest
import torch

from srvae.registry import build_model
from srvae.nets.resnet import DenseResidualBlock
from srvae.sere.bijector import AffineRankOneBijector
from srvae.sere.conv_sere_vae import ConvSeReVAE, ConvSeReVAEConfig
from srvae.sere.stochastic_layers import AmortisedGaussianPriors, ResidualGaussianPosterior

from .test_sere_vae import assert_sampling_feeds_generated_blocks, assert_weights_in_eps_space_equal_those_in_z_space

D = 144  # a 12 × 12 image, 4 blocks of 36 pixels (3 rows each)
TINY = dict(layers=4, latents=3, channels=3, depths=(1, 1), prior_hidden=(8,), posterior_hidden=(8,), bijector_hidden=(8,))


def tiny_model(dtype=torch.float32, seed: int = 0, **params) -> ConvSeReVAE:
    torch.manual_seed(seed)
    model = ConvSeReVAE(ConvSeReVAEConfig(**TINY, **params), D, data_mean=torch.rand(D) * 0.8 + 0.1)
    model.initialise(binary(16, D, seed=9))  # away from the trivial start: every layer's statistics set
    return model.to(dtype)


def binary(*shape, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full(shape, 0.4), generator=torch.Generator().manual_seed(seed))


def data_logits(model: ConvSeReVAE, codes, x: torch.Tensor) -> list[torch.Tensor]:
    """Teacher-forced logits of every block: ``γ_l(z_l, x_{l-1})`` with ``x_{l-1}`` the observed block."""
    previous = [None, *model.partition.split(x)[:-1]]
    return [layer(z, x_prev) for layer, z, x_prev in zip(model.generator.data.layers, codes, previous)]


def test_interface_shapes():
    model = build_model("conv_sere_vae", TINY, data_dim=D)
    x = binary(5, D)
    s = model.score(x, 3)
    assert s.log_likelihood.shape == s.log_prior.shape == s.log_posterior.shape == (3, 5)
    assert s.kl.shape == (3, 5, TINY["layers"])
    samples = model.sample(6)
    assert samples.shape == (6, D) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_dense_blocks_on_the_previous_code_are_the_mlp_versions():
    model = tiny_model()
    expected = [0] + [TINY["latents"]] * (TINY["layers"] - 1)
    assert isinstance(model.generator.priors, AmortisedGaussianPriors)
    assert list(model.generator.priors.context_dims) == expected
    assert all(isinstance(q, ResidualGaussianPosterior) for q in model.inference.posteriors)
    assert all(isinstance(b, AffineRankOneBijector) for b in model.generator.bijectors)
    for modules in (model.generator.bijectors, model.inference.posteriors):
        assert [m.context_dim for m in modules] == expected
    encoders = model.inference.encoder.encoders
    assert len({id(e) for e in encoders}) == TINY["layers"]  # independent encoders, no shared trunk


@pytest.mark.parametrize("l", [0, 1, 3])
def test_data_layer_of_block_l_sees_only_the_observed_block_l_minus_1(l):
    """Perturbing the pixels of any block but l − 1 leaves block l's logits unchanged, blocks ≥ l included."""
    model = tiny_model()
    x = binary(2, D, seed=3)
    codes = model.posterior_pass(x, 2)[0].detach()  # latents held fixed
    before = data_logits(model, codes, x)[l]
    for other in range(TINY["layers"]):
        x_pert = x.clone()
        block = model.partition.split(x_pert)[other]
        block.copy_(1.0 - block)  # split returns views: flip every pixel of that block in place
        after = data_logits(model, codes, x_pert)[l]
        if other == l - 1:
            assert not torch.allclose(before, after)
        else:
            assert torch.equal(before, after), other
    # the gradient of block l's logits w.r.t. x lies on the pixels of block l − 1 alone
    x_req = x.clone().requires_grad_(True)
    logits = data_logits(model, codes, x_req)[l]
    (grad,) = torch.autograd.grad(logits.sum(), x_req, allow_unused=True, materialize_grads=True)
    grad_blocks = model.partition.split(grad.abs().sum(0))
    assert [bool(g.sum() > 0) for g in grad_blocks] == [i == l - 1 for i in range(TINY["layers"])]


@pytest.mark.parametrize("dense_blocks", [0, 2])
def test_importance_weights_in_eps_space_equal_those_in_z_space(dense_blocks):
    model = tiny_model(torch.float64, dense_blocks=dense_blocks)
    assert_weights_in_eps_space_equal_those_in_z_space(model, binary(3, D, seed=2).double(), 4, TINY["latents"],
                                                      lambda codes, x: data_logits(model, codes, x))


def test_sampling_feeds_each_generated_block_to_the_next_layer_and_never_touches_data():
    model = tiny_model()
    seen_prev = []
    for layer in model.generator.data.layers:
        layer.register_forward_pre_hook(lambda _m, args: seen_prev.append(args[1] if len(args) > 1 else None))
    assert_sampling_feeds_generated_blocks(model, seen_prev)


def test_a_data_layer_with_a_previous_block_needs_it():
    model = tiny_model()
    with pytest.raises(ValueError, match="pass x_\\{l-1\\}"):
        model.generator.data.layers[1](torch.randn(2, TINY["latents"]))


def dense_residual(h: torch.Tensor, weights: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """``h ← h + 0.1 · W₂ elu(W₁ elu(h))`` for each ``(W₁, b₁, W₂, b₂)`` (``nn.Linear`` layout), written out."""
    elu, linear = torch.nn.functional.elu, torch.nn.functional.linear
    for w1, b1, w2, b2 in weights:
        h = h + 0.1 * linear(elu(linear(elu(h), w1, b1)), w2, b2)
    return h


def block_weights(blocks, transpose: bool = False, g: int | None = None) -> list[tuple[torch.Tensor, ...]]:
    """The ``(W₁, b₁, W₂, b₂)`` of residual blocks; grouped blocks store ``[G, in, out]``: group ``g``, transposed."""
    def pick(linear):
        if g is None:
            return linear.weight, linear.bias
        return linear.weight[g].T, linear.bias[g]
    return [(*pick(b.first), *pick(b.second)) for b in blocks]


def test_dense_blocks_switch_off_leaves_plain_mlps_and_on_adds_n_blocks_to_every_block_on_the_code():
    plain, residual = tiny_model(), tiny_model(dense_blocks=2)
    assert not any(isinstance(m, DenseResidualBlock) for m in plain.modules())
    width, layers = TINY["prior_hidden"][0], TINY["layers"]
    # each of the L − 1 priors, bijectors and first estimates, and the L posterior residuals: 2 blocks of 2 maps
    networks = 3 * (layers - 1) + layers
    assert residual.num_parameters - plain.num_parameters == networks * 2 * 2 * (width * width + width)


def test_dense_blocks_compute_the_residual_form_in_prior_posterior_and_bijector():
    """Each network on z_{l-1}, written out by hand from its weights: first map, residual blocks, elu, output map."""
    torch.manual_seed(3)
    model = tiny_model(dense_blocks=2)
    elu, linear = torch.nn.functional.elu, torch.nn.functional.linear
    z = torch.randn(2, 5, TINY["latents"])
    with torch.no_grad():
        for l in range(1, TINY["layers"]):
            bijector = model.generator.bijectors[l]
            net = bijector.conditioner
            h = dense_residual(net.input_maps[0](z), block_weights(net.rest[:2]))
            torch.testing.assert_close(net(z), net.rest[-1][-1](elu(h)))

            priors, g = model.generator.priors, l - 1
            net = priors.net
            first, out = net.input_maps[0], net.output_layer
            h = dense_residual(linear(z, first.weight[g].T, first.bias[g]), block_weights(net.blocks, g=g))
            torch.testing.assert_close(priors.raw(l, z), linear(elu(h), out.weight[g].T, out.bias[g]))

            posterior = model.inference.posteriors[l]
            evidence = torch.randn(5, posterior.evidence_features)
            residual = dense_residual(evidence + posterior.context_map(z), block_weights(posterior.residual[:2]))
            first = posterior.first
            estimate = dense_residual(first.input_maps[0](z), block_weights(first.rest[:2]))
            params = posterior.residual[-1][-1](elu(residual)) + first.rest[-1][-1](elu(estimate))
            mean, std = posterior(evidence, z)
            torch.testing.assert_close(mean, params[..., :TINY["latents"]])
        # all priors at once (grouped) are each layer's own
        codes = torch.randn(TINY["layers"] - 1, 2, 5, TINY["latents"])
        mean, std = model.generator.priors(codes)
        for l in range(1, TINY["layers"]):
            torch.testing.assert_close((mean[l], std[l]), model.generator.priors.layer(l, codes[l - 1]))


def test_dense_blocks_need_hidden_layers():
    with pytest.raises(ValueError, match="dense_blocks need a hidden layer"):
        ConvSeReVAEConfig(**{**TINY, "bijector_hidden": ()}, dense_blocks=1)
