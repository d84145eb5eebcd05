"""SeRe-VAE's amortised bijective layer for MNIST (Apostolopoulou et al. 2020, Section 3.2, MLP version).

``z_l = f_l(ε_l; z_{l-1}) = c + (diag(d) + u uᵀ) ε_l`` with ``c, d, u ∈ R^N`` the outputs of a block applied to
the previous latent code ``z_{l-1}``, and ``d = softplus(·) + 1e-4 > 0``. Because ``d > 0``,
``1 + uᵀ diag(d)⁻¹ u ≥ 1``: the matrix is always invertible, and

- log-determinant (matrix determinant lemma): ``log|det| = Σ_i log d_i + log(1 + uᵀ diag(d)⁻¹ u)``;
- inverse (Sherman–Morrison): ``ε = D⁻¹y − D⁻¹u (uᵀD⁻¹y) / (1 + uᵀD⁻¹u)`` with ``y = z − c``, ``D = diag(d)``.

It follows the bijector contract of :mod:`srvae.flows.base`, batched over any leading dimensions. SeRe-VAE
uses one instance per layer, shared by its generator and its inference network, and accepts any
:class:`~srvae.flows.base.Bijector` in its place (the Self-Reflective IAF swaps in an IAF conditioned on
``z_{l-1}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from srvae.distributions import inverse_positive, positive
from srvae.flows.base import Bijector
from srvae.nets.mlp import ConditionalMLP

from .stochastic_layers import context_inputs


def _quadratic(d: Tensor, u: Tensor) -> Tensor:
    """``uᵀ diag(d)⁻¹ u`` over the last dimension."""
    return (u * u / d).sum(-1)


def affine_rank_one_logabsdet(d: Tensor, u: Tensor) -> Tensor:
    """``log|det(diag(d) + u uᵀ)| = Σ log d + log(1 + uᵀ diag(d)⁻¹ u)`` for ``d > 0`` (determinant lemma)."""
    return torch.log(d).sum(-1) + torch.log1p(_quadratic(d, u))


def affine_rank_one_map(eps: Tensor, c: Tensor, d: Tensor, u: Tensor) -> Tensor:
    """``z = c + (diag(d) + u uᵀ) ε``, broadcast over leading dimensions."""
    # plain products and sums: two addcmul calls save 2 forward calls a layer but cost 4 more in backward
    return c + d * eps + u * (u * eps).sum(-1, keepdim=True)


def affine_rank_one(eps: Tensor, c: Tensor, d: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``z = c + (diag(d) + u uᵀ) ε`` and its ``log|det|``, broadcast over leading dimensions."""
    z = affine_rank_one_map(eps, c, d, u)
    return z, affine_rank_one_logabsdet(d, u).expand(z.shape[:-1])


def affine_rank_one_inverse(z: Tensor, c: Tensor, d: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``ε = (diag(d) + u uᵀ)⁻¹ (z − c)`` by Sherman–Morrison, and the inverse's ``log|det|`` (= −forward's)."""
    y_over_d = (z - c) / d
    u_over_d = u / d
    coef = (u * y_over_d).sum(-1, keepdim=True) / (1.0 + _quadratic(d, u)).unsqueeze(-1)
    eps = y_over_d - u_over_d * coef
    return eps, -affine_rank_one_logabsdet(d, u).expand(eps.shape[:-1])


class AffineRankOneBijector(Bijector):
    """Amortised ``z = c + (diag(d) + u uᵀ) ε`` whose ``(c, d, u)`` come from a block applied to the context.

    Without context (``context_dim = 0``, the first layer) ``(c, d, u)`` are free parameters. The layer starts
    near the identity — ``c ≈ 0``, ``d ≈ 1``, a small random ``u`` (not zero: ``u = 0`` is a stationary point
    of ``u uᵀ``, where ``u`` would get no gradient) — and weakly dependent on the context, so that early in
    training the codes are not scrambled by a random function of ``z_{l-1}``.
    """

    def __init__(
        self, features: int, context_dim: int, hidden: Sequence[int], act: str, init_u_std: float = 0.1,
        init_weight_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.features, self.context_dim = features, context_dim
        self.conditioner = ConditionalMLP([context_dim] if context_dim else [], hidden, 3 * features, act)
        bias = torch.cat([torch.zeros(features), torch.full((features,), inverse_positive(1.0)),
                          init_u_std * torch.randn(features)])
        self.conditioner.init_output(bias, weight_scale=init_weight_scale)

    def affine_parameters(self, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(c, d, u)``, each ``[..., N]``, with ``d > 0``."""
        ctx = context_inputs(context, self.context_dim)
        return self.affine_parameters_from([m(*ctx) for m in self.context_linears()])

    def context_linears(self) -> list[nn.Linear]:
        """The linear map of the context the conditioner starts with (none without context): SeRe-VAE's chain
        applies it, with the posterior's maps of ``z_{l-1}``, as one matrix product."""
        return [self.conditioner.input_maps[0]] if self.context_dim else []

    def affine_parameters_from(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`affine_parameters` from ``features``, the outputs of :meth:`context_linears` on the context."""
        raw = self.conditioner.from_first(*features) if features else self.conditioner()
        c, pre_d, u = raw.chunk(3, dim=-1)
        return c, positive(pre_d), u

    def forward(self, eps: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return affine_rank_one(eps, *self.affine_parameters(context))

    def transform(self, eps: Tensor, context: Tensor | None = None) -> Tensor:
        return affine_rank_one_map(eps, *self.affine_parameters(context))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return affine_rank_one_inverse(z, *self.affine_parameters(context))
