"""The IW-NLL estimator on models whose log p(x) is known exactly, and its chunking arithmetic."""

import math

import pytest
import torch

from srvae.distributions import gaussian_log_prob, standard_normal_log_prob
from srvae.models import LatentVariableModel, Scores
from srvae.study.run.evaluate import iw_log_likelihood


class LinearGaussian(LatentVariableModel):
    """z ~ N(0, I_d), x | z ~ N(W z + b, s² I): log p(x) = log N(x; b, W Wᵀ + s² I) in closed form.

    The proposal is the exact posterior with its standard deviation multiplied by ``inflate``
    (``inflate = 1``: exact posterior, every log weight equals log p(x)).
    """

    Config = dict

    def __init__(self, d: int = 3, D: int = 5, s: float = 0.7, inflate: float = 1.0) -> None:
        super().__init__({}, D)
        g = torch.Generator().manual_seed(1)
        self.W = torch.nn.Parameter(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(D, generator=g, dtype=torch.float64))
        self.s, self.inflate = s, inflate

    @torch.no_grad()
    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.data_dim, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def score(self, x, k):
        d = self.W.shape[1]
        precision = torch.eye(d, dtype=torch.float64) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ cov / self.s**2  # [B, d]
        chol = torch.linalg.cholesky(cov) * self.inflate
        z = mean + torch.randn(k, *mean.shape, dtype=torch.float64) @ chol.T
        q = torch.distributions.MultivariateNormal(mean, scale_tril=chol)
        lik = gaussian_log_prob(x, z @ self.W.T + self.b, torch.full_like(x, self.s))
        return Scores(lik, standard_normal_log_prob(z), q.log_prob(z))

    def sample(self, n):
        raise NotImplementedError


@pytest.fixture
def x():
    return torch.randn(64, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2


@pytest.mark.parametrize("k", [1, 7, 1000])
def test_exact_posterior_gives_exact_log_likelihood_for_any_k(x, k):
    model = LinearGaussian(inflate=1.0)
    est = iw_log_likelihood(model, x, k=k, k_chunk=64, batch_size=20)
    assert torch.allclose(est.log_px, model.exact_log_px(x).detach(), atol=1e-8)
    assert torch.allclose(est.elbo, est.log_px, atol=1e-8)  # zero-variance weights: ELBO = log p(x)


def test_worse_proposal_rises_towards_log_likelihood_with_k(x):
    model = LinearGaussian(inflate=2.5)
    exact = float(model.exact_log_px(x).mean())
    bounds = [float(iw_log_likelihood(model, x, k=k, k_chunk=200, batch_size=100).log_px.mean()) for k in (1, 10, 100, 2000)]
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[0] < exact - 0.5  # the proposal is genuinely worse
    assert bounds[-1] < exact + 0.02 and exact - bounds[-1] < 0.1, (bounds[-1], exact)


class Tape(LatentVariableModel):
    """Hands out pre-computed log weights in order, to check chunking and batching exactly."""

    Config = dict

    def __init__(self, table):  # table: [K, N]
        super().__init__({}, 1)
        self.table, self.cursor, self.offset, self.batch = table, 0, 0, 0
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def score(self, x, k):
        b = len(x)
        if self.cursor == self.table.shape[0]:  # all K weights of this batch handed out: next batch
            self.cursor, self.offset = 0, self.offset + self.batch
        self.batch = b
        w = self.table[self.cursor : self.cursor + k, self.offset : self.offset + b]
        self.cursor += k
        zero = torch.zeros_like(w)
        return Scores(w, zero, zero)

    def sample(self, n):
        raise NotImplementedError


@pytest.mark.parametrize("k_chunk,batch_size", [(1000, 50), (7, 13), (1, 50), (333, 1)])
def test_chunking_over_k_and_batch_equals_one_logsumexp(k_chunk, batch_size):
    table = torch.randn(1000, 50, dtype=torch.float64) * 30 - 500  # large, spread weights: needs stability
    est = iw_log_likelihood(Tape(table), torch.zeros(50, 1), k=1000, k_chunk=k_chunk, batch_size=batch_size)
    expected = torch.logsumexp(table, dim=0) - math.log(1000)
    assert torch.allclose(est.log_px.double(), expected, atol=1e-6)
    assert torch.allclose(est.elbo.double(), table.mean(0), atol=1e-6)
    assert est.nll == pytest.approx(-float(expected.mean()), abs=1e-5)  # per example, then averaged


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        iw_log_likelihood(LinearGaussian(), torch.zeros(2, 5, dtype=torch.float64), k=0, k_chunk=1, batch_size=1)
