"""The affine diagonal-plus-rank-one bijector z = c + (diag(d) + u uᵀ) ε and its nflows contract."""

import pytest
import torch

from srvae.flows.base import IdentityBijector
from srvae.sere.bijector import AffineRankOneBijector, affine_rank_one, affine_rank_one_inverse

N = 7


def explicit_matrix(d, u):
    """diag(d) + u uᵀ as a dense [..., N, N] matrix."""
    return torch.diag_embed(d) + u.unsqueeze(-1) * u.unsqueeze(-2)


def random_parameters(shape, conditioning, generator):
    """(c, d, u) with d > 0; "bad": d spans 1e-4..1e-1, u has entries up to ~1e3."""
    c = torch.randn(*shape, N, generator=generator, dtype=torch.float64)
    if conditioning == "random":
        d = torch.rand(*shape, N, generator=generator, dtype=torch.float64) + 0.1
        u = torch.randn(*shape, N, generator=generator, dtype=torch.float64)
    else:
        d = 10.0 ** (-4 + 3 * torch.rand(*shape, N, generator=generator, dtype=torch.float64))
        u = 1e3 * torch.randn(*shape, N, generator=generator, dtype=torch.float64)
    return c, d, u


@pytest.mark.parametrize("conditioning", ["random", "bad"])
def test_forward_matches_explicit_matrix_and_slogdet(conditioning):
    g = torch.Generator().manual_seed(0)
    c, d, u = random_parameters((4, 3), conditioning, g)
    eps = torch.randn(4, 3, N, generator=g, dtype=torch.float64)
    z, logdet = affine_rank_one(eps, c, d, u)
    A = explicit_matrix(d, u)
    torch.testing.assert_close(z, c + (A @ eps.unsqueeze(-1)).squeeze(-1))
    sign, logabs = torch.linalg.slogdet(A)
    assert torch.all(sign > 0)  # always invertible, orientation-preserving
    torch.testing.assert_close(logdet, logabs)


@pytest.mark.parametrize("conditioning", ["random", "bad"])
def test_inverse_undoes_forward_and_negates_logdet(conditioning):
    g = torch.Generator().manual_seed(1)
    c, d, u = random_parameters((5,), conditioning, g)
    eps = torch.randn(2, 5, N, generator=g, dtype=torch.float64)  # parameters broadcast over a leading dim
    z, logdet = affine_rank_one(eps, c, d, u)
    eps_back, inv_logdet = affine_rank_one_inverse(z, c, d, u)
    torch.testing.assert_close(inv_logdet, -logdet)
    assert logdet.shape == (2, 5)
    # "bad" matrices have condition numbers ~1e11: no solver recovers ε to machine precision, so
    # Sherman–Morrison must be as accurate as a dense LU solve (up to a small factor)
    lu_error = (torch.linalg.solve(explicit_matrix(d, u), (z - c).unsqueeze(-1)).squeeze(-1) - eps).abs().max()
    assert (eps_back - eps).abs().max() <= 10 * lu_error + 1e-12


def test_float32_round_trip_with_random_parameters():
    g = torch.Generator().manual_seed(2)
    c, d, u = (t.float() for t in random_parameters((64,), "random", g))
    eps = torch.randn(64, N, generator=g)
    eps_back, _ = affine_rank_one_inverse(affine_rank_one(eps, c, d, u)[0], c, d, u)
    torch.testing.assert_close(eps_back, eps, rtol=1e-4, atol=1e-4)


def test_amortised_bijector_follows_the_nflows_contract():
    torch.manual_seed(0)
    bij = AffineRankOneBijector(N, context_dim=3, hidden=(16,), act="elu").double()
    context = torch.randn(4, 5, 3, dtype=torch.float64)
    eps = torch.randn(4, 5, N, dtype=torch.float64)
    z, logdet = bij(eps, context)
    c, d, u = bij.affine_parameters(context)
    assert torch.all(d > 0) and c.shape == d.shape == u.shape == (4, 5, N)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(explicit_matrix(d, u))[1])
    eps_back, inv_logdet = bij.inverse(z, context)
    torch.testing.assert_close(eps_back, eps)
    torch.testing.assert_close(inv_logdet, -logdet)
    # the parameters are a function of the context: another context gives another z
    assert not torch.allclose(bij(eps, context + 1.0)[0], z)


def test_without_context_the_parameters_are_free_and_broadcast():
    bij = AffineRankOneBijector(N, context_dim=0, hidden=(16,), act="elu")
    eps = torch.randn(3, 2, N)
    z, logdet = bij(eps, None)
    assert z.shape == eps.shape and logdet.shape == (3, 2)
    assert all(p.requires_grad for p in bij.parameters()) and bij.affine_parameters()[0].shape == (N,)


def test_gradients_are_finite_for_badly_conditioned_parameters():
    bij = AffineRankOneBijector(N, context_dim=0, hidden=(), act="elu")
    with torch.no_grad():  # d at its floor (pre-activation −30), u huge
        bij.conditioner.constant.copy_(torch.cat([torch.zeros(N), torch.full((N,), -30.0), torch.full((N,), 1e3)]))
    eps = torch.randn(8, N, requires_grad=True)
    z, logdet = bij(eps)
    eps_back, inv_logdet = bij.inverse(z.detach())
    (z.square().mean() + logdet.mean() + eps_back.square().mean() + inv_logdet.mean()).backward()
    grads = [eps.grad, *(p.grad for p in bij.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(logdet).all() and torch.all(bij.affine_parameters()[1] > 0)


def test_identity_bijector_has_zero_logdet():
    eps = torch.randn(3, 4, N)
    z, logdet = IdentityBijector()(eps, None)
    back, inv_logdet = IdentityBijector().inverse(z, None)
    assert torch.equal(z, eps) and torch.equal(back, eps)
    assert torch.equal(logdet, torch.zeros(3, 4)) and torch.equal(inv_logdet, torch.zeros(3, 4))


@pytest.mark.parametrize("context_dim", [0, 3])
def test_starts_near_the_identity_and_every_parameter_learns(context_dim):
    torch.manual_seed(0)
    bij = AffineRankOneBijector(N, context_dim=context_dim, hidden=(16,), act="elu")
    context = torch.randn(32, 3) if context_dim else None
    c, d, u = bij.affine_parameters(context)
    assert c.abs().max() < 0.05 and (d - 1).abs().max() < 0.05 and 0 < u.norm(dim=-1).min() < 1
    eps = torch.randn(32, N)
    z, logdet = bij(eps, context)
    (z.sin().sum() + logdet.sum()).backward()
    # u = 0 would be a stationary point of u uᵀ: no parameter may start without a gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bij.parameters())
