"""The stochastic and data layers of SeRe-VAE (Apostolopoulou et al. 2020, Section 3, Figure 1), MLP version.

Every layer is made of :class:`srvae.nets.mlp.ConditionalMLP` blocks, which turn its inputs (the previous
latent code ``z_{l-1}``, an encoding of ``x``, the previous image block) into distribution parameters.

- :class:`AmortisedGaussian` — the prior layer ``p(ε_l | z_{l-1}) = N(μ_l(z_{l-1}), diag σ_l(z_{l-1})²)``;
  built without a context (first layer) it is a learned diagonal Gaussian with free parameters.
- :class:`ResidualGaussianPosterior` — the posterior layer ``q(ε_l | z_{l-1}, x)``: a first estimate of
  ``(μ, σ)`` from ``z_{l-1}`` alone (its own network, or the prior's output), corrected by a residual
  computed from the layer's own encoding of ``x``.
- :class:`ResidualBernoulli` — the data layer ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)``, Bernoulli logits of
  block ``x_l`` (block 1 has no previous block and no residual term).

A layer built with ``context_dim = 0`` has no input for ``z_{l-1}`` and ignores the context it is given:
that is the first layer of SeRe-VAE, and how the matched DLGM cuts the latent-code feedback.
Scales come from :func:`srvae.distributions.positive` (softplus + floor), never from an unbounded exp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from srvae.distributions import inverse_positive, marginal_logits, mean_and_std
from srvae.nets.mlp import ConditionalMLP


def context_inputs(context: Tensor | None, context_dim: int) -> tuple[Tensor, ...]:
    """The context inputs of a layer: none when it was built without one (``context_dim == 0``)."""
    if context_dim == 0:
        return ()
    if context is None:
        raise ValueError("this layer is conditioned on z_{l-1} but no context was given")
    return (context,)


class AmortisedGaussian(nn.Module):
    """Prior layer ``p(ε_l | z_{l-1}) = N(μ(z_{l-1}), diag σ(z_{l-1})²)``; a free diagonal Gaussian without context."""

    def __init__(self, latents: int, context_dim: int, hidden: Sequence[int], act: str) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.net = ConditionalMLP([context_dim] if context_dim else [], hidden, 2 * latents, act)
        self.net.init_output(inverse_positive(1.0), slice(latents, None))  # start near N(0, I)

    def raw(self, context: Tensor | None = None) -> Tensor:
        """The unconstrained parameters ``(μ, a)``, ``[..., 2N]``, with ``σ = softplus(a) + floor``."""
        return self.net(*context_inputs(context, self.context_dim))

    def forward(self, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation, ``[..., N]`` (``[N]`` without context)."""
        return mean_and_std(self.raw(context))


class ResidualGaussianPosterior(nn.Module):
    """Posterior layer ``q(ε_l | z_{l-1}, x) = N(μ, diag σ²)`` with a residual parametrisation.

    ``(μ, a) = first(z_{l-1}) + residual(h_l(x), z_{l-1})`` and ``σ = softplus(a) + floor``: the first estimate
    sees the latent code alone, the residual the evidence ``h_l(x)`` from this layer's own encoder. The paper
    says the residual is "computed from the evidence"; it also sees ``z_{l-1}`` here *(inferred)*, so that
    the correction can depend on where the previous layer put the code.

    The paper's "first estimate, obtained solely from ``z_{l-1}``" has two readings (``first``):

    - ``"network"`` — a network of ``z_{l-1}`` of its own; without context (the first layer, the DLGM) there
      is none and the posterior is ``residual(h_l(x))`` alone;
    - ``"prior"`` — the prior layer's own output ``(μ_p, a_p)`` (posterior = prior + residual, as NVAE-style
      code does), passed to :meth:`forward` as ``prior_raw``.
    """

    def __init__(
        self, latents: int, evidence_dim: int, context_dim: int, hidden: Sequence[int], act: str,
        first: Literal["network", "prior"] = "network",
    ) -> None:
        super().__init__()
        self.context_dim, self.first_estimate = context_dim, first
        ctx = [context_dim] if context_dim else []
        self.first = ConditionalMLP(ctx, hidden, 2 * latents, act) if context_dim and first == "network" else None
        self.residual = ConditionalMLP([evidence_dim, *ctx], hidden, 2 * latents, act)

    def forward(
        self, evidence: Tensor, context: Tensor | None = None, prior_raw: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``[..., N]`` from ``h_l(x)`` ``[B, H]`` and ``z_{l-1}`` ``[k, B, N]``.

        ``prior_raw``: the prior layer's unconstrained ``(μ_p, a_p)``, needed when the first estimate is the prior.
        """
        ctx = context_inputs(context, self.context_dim)
        params = self.residual(evidence, *ctx)
        if self.first is not None:
            params = params + self.first(*ctx)
        elif self.first_estimate == "prior":
            if prior_raw is None:
                raise ValueError("this posterior's first estimate is the prior: pass the prior's raw output")
            params = params + prior_raw
        return mean_and_std(params)


class ResidualBernoulli(nn.Module):
    """Data layer: logits ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` of ``p(x_l | z_l, x_{l-1})``.

    ``prev_block_dim = 0`` (block 1): ``γ_1 = γ¹_1(z_1)``. ``block_mean`` (training pixel means of the block)
    starts ``γ¹`` at the data's marginal, as Burda et al. (2016) do for their decoders.
    """

    def __init__(
        self,
        latents: int,
        block_dim: int,
        prev_block_dim: int,
        hidden: Sequence[int],
        act: str,
        block_mean: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.first = ConditionalMLP([latents], hidden, block_dim, act)
        self.residual = ConditionalMLP([prev_block_dim, latents], hidden, block_dim, act) if prev_block_dim else None
        if block_mean is not None:
            self.first.init_output(marginal_logits(block_mean))

    def forward(self, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """Logits ``[..., D_l]`` from ``z_l`` ``[k, B, N]`` and the previous block ``x_{l-1}`` ``[B, D_{l-1}]``."""
        logits = self.first(z)
        if self.residual is not None:
            if x_prev is None:
                raise ValueError("this data layer has a residual term and needs the previous block")
            logits = logits + self.residual(x_prev, z)
        return logits

    def sample(self, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """A Bernoulli draw of the block given ``z_l`` and the previous block."""
        return torch.bernoulli(torch.sigmoid(self(z, x_prev)))
