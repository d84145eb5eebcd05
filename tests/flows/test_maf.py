"""MAF: the exact log-likelihood on a case with a known density, and batch norm's test-time statistics."""

import torch
from torch.distributions import MultivariateNormal

from baselines.maf import MAF
from srvae.flows.batch_norm import BatchNormBijector
from srvae.flows.maf import MaskedAutoregressiveFlow
from srvae.registry import build_model


def linear_gaussian_maf(a: float, c: float, b: torch.Tensor, log_scale: torch.Tensor) -> MAF:
    """MAF(1) on 3 dimensions, no batch norm, whose MADE is affine: ``x₁ = b₁ + s₁u₁``, ``x₂ = a x₁ + b₂ + s₂u₂``,
    ``x₃ = c x₂ + b₃ + s₃u₃`` (``s = exp(log_scale)``). ReLU units in pairs, ``relu(v) − relu(−v) = v``, make
    the MADE exactly linear in the inputs before each output."""
    model = build_model("maf", {"mades": 1, "hidden": [4], "batch_norm": False}, 3).double()
    made = model.flow.layers[0].made  # identity ordering; hidden degrees cycle 1, 2, 1, 2
    with torch.no_grad():
        first, out = made.hidden[0], made.output
        first.weight.zero_(), first.bias.zero_(), out.weight.zero_()
        first.weight[0, 0], first.weight[2, 0] = 1.0, -1.0  # degree-1 units: ±x₁
        first.weight[1, 1], first.weight[3, 1] = 1.0, -1.0  # degree-2 units: ±x₂
        out.weight[1, 0], out.weight[1, 2] = a, -a  # μ₂ = a x₁ + b₂
        out.weight[2, 1], out.weight[2, 3] = c, -c  # μ₃ = c x₂ + b₃
        out.bias.copy_(torch.cat([b, log_scale]))  # rows [0, 3): μ, rows [3, 6): α = log s
    return model


def test_maf_log_likelihood_is_that_of_the_gaussian_it_defines():
    a, c = 0.8, -1.5
    b = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    log_scale = torch.tensor([0.3, -0.7, 0.1], dtype=torch.float64)
    model = linear_gaussian_maf(a, c, b, log_scale).eval()
    # x = A x + b + S u  ⇒  x = M (b + S u), M = (I − A)⁻¹: mean M b, covariance M S² Mᵀ
    A = torch.tensor([[0.0, 0, 0], [a, 0, 0], [0, c, 0]], dtype=torch.float64)
    M = torch.linalg.inv(torch.eye(3, dtype=torch.float64) - A)
    truth = MultivariateNormal(M @ b, M @ torch.diag(torch.exp(2 * log_scale)) @ M.T)
    x = truth.sample((200,))
    torch.testing.assert_close(model.log_prob(x), truth.log_prob(x))
    scores = model.score(x, 4)  # the model contract: every weight is p(x), zero prior and posterior terms
    torch.testing.assert_close(scores.log_weights, truth.log_prob(x).expand(4, -1))
    assert not scores.log_prior.any() and not scores.log_posterior.any()
    # and its samples follow that Gaussian: the generating direction inverts the density direction
    torch.manual_seed(0)
    samples = model.sample(20_000)
    torch.testing.assert_close(samples.mean(0), truth.mean, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), truth.covariance_matrix, atol=0.25, rtol=0.05)


def test_batch_norm_gets_the_exact_statistics_of_the_data_layer_by_layer():
    torch.manual_seed(0)
    flow = MaskedAutoregressiveFlow(6, 2, (12,), batch_norm=True).double()
    x = 3.0 + 2.0 * torch.randn(500, 6, dtype=torch.float64)
    flow.train()
    flow(x[:50])  # training mode moves the running averages only a little
    flow.set_batch_norm_statistics(x.split(128))
    flow.eval()
    u, _ = flow(x)  # the last layer is a batch norm at γ = 0, β = 0: its output is standardised over x
    torch.testing.assert_close(u.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(u.var(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-4, rtol=0)


def test_batch_norm_log_determinant_uses_exponentiated_gamma():
    bn = BatchNormBijector(2).double().eval()
    with torch.no_grad():
        bn.log_gamma.copy_(torch.tensor([0.5, -1.0])), bn.var.copy_(torch.tensor([4.0, 0.25]))
    _, logabsdet = bn(torch.zeros(3, 2, dtype=torch.float64))
    expected = 0.5 - 1.0 - 0.5 * (torch.log(torch.tensor(4.0 + bn.eps)) + torch.log(torch.tensor(0.25 + bn.eps)))
    torch.testing.assert_close(logabsdet, expected.double().expand(3))


def test_refresh_statistics_gives_the_maf_training_set_statistics():
    torch.manual_seed(0)
    model = build_model("maf", {"mades": 2, "hidden": [16]}, 5)
    x = torch.randn(300, 5) * 4 - 7
    model.refresh_statistics(x.split(64))
    norms = [layer for layer in model.flow.layers if isinstance(layer, BatchNormBijector)]
    torch.testing.assert_close(norms[0].mean, model.flow.layers[0].eval()(x)[0].mean(0), atol=1e-4, rtol=0)
