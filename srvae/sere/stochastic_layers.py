"""The stochastic and data layers of SeRe-VAE (Apostolopoulou et al. 2020, Section 3, Figure 1), MLP version.

Layers turn their inputs (the previous latent code ``z_{l-1}``, an encoding of ``x``, the previous image block)
into distribution parameters with MLP blocks (:class:`srvae.nets.mlp.ConditionalMLP`, and its grouped form
:class:`srvae.nets.grouped.GroupedMLP` where the ``L`` layers' blocks can run as one batched operation).

- :class:`AmortisedGaussianPriors` — the prior layers ``p(ε_l | z_{l-1}) = N(μ_l(z_{l-1}), diag σ_l(z_{l-1})²)`` of
  all ``L`` layers; the first (and every layer, built without a context) is a learned diagonal Gaussian with
  free parameters. Given the codes, the priors do not depend on each other: they are evaluated after the
  sequential posterior pass, for all layers at once.
- :class:`ResidualGaussianPosterior` — the posterior layer ``q(ε_l | z_{l-1}, x)`` of one layer: a first estimate
  of ``(μ, σ)`` from ``z_{l-1}`` alone (its own network, or the prior's output), corrected by a residual computed
  from the layer's own encoding of ``x``. It is part of the sequential chain.
- :class:`DataLayers` — the data layers ``p(x_l | z_l, x_{l-1})`` of all ``L`` blocks: the log-likelihood of an
  image given every code (teacher-forced), and one block's draw (sampling);
- :class:`ResidualBernoulliLayers` — the data layers ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` of all ``L`` blocks,
  Bernoulli logits of block ``x_l`` (block 1 has no previous block and no residual term); teacher-forced, they
  run for all blocks at once;
- :class:`IndependentDataLayers` — a module per block, for data layers that do not run grouped (SeRe-MAF's
  conditional flows, the convolutional SeRe-VAE's decoders).

A layer built with ``context_dim = 0`` has no input for ``z_{l-1}`` and ignores the context it is given:
that is the first layer of SeRe-VAE, and how the matched DLGM cuts the latent-code feedback.
Scales come from :func:`srvae.distributions.positive` (softplus + floor), never from an unbounded exp.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob, inverse_positive, marginal_logits, mean_and_std
from srvae.nets.grouped import GroupedMLP
from srvae.nets.mlp import ConditionalMLP, activation, mlp


def context_inputs(context: Tensor | None, context_dim: int) -> tuple[Tensor, ...]:
    """The context inputs of a layer: none when it was built without one (``context_dim == 0``)."""
    if context_dim == 0:
        return ()
    if context is None:
        raise ValueError("this layer is conditioned on z_{l-1} but no context was given")
    return (context,)


class LayerPriors(nn.Module, ABC):
    """The priors ``p(ε_l | z_{l-1})``, ``l = 1..L``, of a stack of stochastic layers: diagonal Gaussians.

    :meth:`forward` gives every layer's ``(mean, std)`` at once from the codes ``z_1..z_{L-1}``; :meth:`layer`
    one layer's, for the code that is sequential by nature (sampling, a posterior that starts from its prior).
    """

    #: width of the context of each layer (0: not conditioned on ``z_{l-1}``)
    context_dims: tuple[int, ...]

    @abstractmethod
    def raw(self, layer: int, context: Tensor | None = None) -> Tensor:
        """Layer ``layer``'s (0-based) unconstrained ``(μ, a)``, ``[..., 2N]``, with ``σ = softplus(a) + floor``."""

    @abstractmethod
    def forward(self, contexts: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of every layer, broadcastable to ``[L, ..., N]``, from ``contexts = z_1..z_{L-1}``
        ``[L-1, ..., N]``."""

    def layer(self, layer: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and std of layer ``layer`` alone, ``[..., N]`` (``[N]`` without context)."""
        return mean_and_std(self.raw(layer, context))


class AmortisedGaussianPriors(LayerPriors):
    """``p(ε_l | z_{l-1}) = N(μ_l(z_{l-1}), diag σ_l(z_{l-1})²)`` for ``l ≥ 2`` (one grouped MLP), and a free
    diagonal Gaussian for the first layer — for every layer when ``context_dim = 0``. Each starts near N(0, I).
    """

    def __init__(self, layers: int, latents: int, context_dim: int, hidden: Sequence[int], act: str) -> None:
        super().__init__()
        amortised = layers - 1 if context_dim else 0
        self.context_dims = (0,) * (layers - amortised) + (context_dim,) * amortised
        self.free = nn.Parameter(torch.zeros(layers - amortised, 2 * latents))
        with torch.no_grad():
            self.free[:, latents:] = inverse_positive(1.0)
        self.net = GroupedMLP(amortised, [context_dim], hidden, 2 * latents, act) if amortised else None
        if self.net is not None:
            with torch.no_grad():
                self.net.output_layer.bias[:, latents:] = inverse_positive(1.0)

    def raw(self, layer: int, context: Tensor | None = None) -> Tensor:
        if self.context_dims[layer] == 0:
            return self.free[layer]
        return self.net.group(layer - len(self.free), *context_inputs(context, self.context_dims[layer]))

    def forward(self, contexts: Tensor) -> tuple[Tensor, Tensor]:
        free = self.free.view(len(self.free), *[1] * (contexts.dim() - 2), -1)  # [F, 1, …, 1, 2N]
        if self.net is None:
            return mean_and_std(free)
        amortised = self.net(contexts)  # [L-1, ..., 2N]
        return mean_and_std(torch.cat([free.expand(1, *amortised.shape[1:]), amortised]))


class ResidualGaussianPosterior(nn.Module):
    """Posterior layer ``q(ε_l | z_{l-1}, x) = N(μ, diag σ²)`` with a residual parametrisation.

    ``(μ, a) = first(z_{l-1}) + residual(h_l(x), z_{l-1})`` and ``σ = softplus(a) + floor``: the first estimate
    sees the latent code alone, the residual the evidence ``h_l(x)`` from this layer's own encoder. The paper
    says the residual is "computed from the evidence"; it also sees ``z_{l-1}`` here *(inferred)*, so that
    the correction can depend on where the previous layer put the code.

    The residual's first linear map of ``h_l(x)`` does not depend on the chain of layers: SeRe-VAE applies it to
    all layers' encodings at once (:class:`~srvae.sere.sere_vae.InferenceNetwork`), and this layer receives its
    result, ``evidence = W h_l(x) + b`` (``[B, evidence_features]``); it adds the map of ``z_{l-1}`` and runs the
    rest of the residual network.

    The paper's "first estimate, obtained solely from ``z_{l-1}``" has two readings (``first``):

    - ``"network"`` — a network of ``z_{l-1}`` of its own; without context (the first layer, the DLGM) there
      is none and the posterior is ``residual(h_l(x))`` alone;
    - ``"prior"`` — the prior layer's own output ``(μ_p, a_p)`` (posterior = prior + residual, as NVAE-style
      code does), passed to :meth:`forward` as ``prior_raw``.
    """

    def __init__(
        self, latents: int, context_dim: int, hidden: Sequence[int], act: str,
        first: Literal["network", "prior"] = "network",
    ) -> None:
        super().__init__()
        self.context_dim, self.first_estimate = context_dim, first
        #: width of the residual's first layer, which the evidence arrives in
        self.evidence_features = hidden[0] if hidden else 2 * latents
        self.context_map = nn.Linear(context_dim, self.evidence_features, bias=False) if context_dim else None
        self.residual = nn.Sequential(activation(act), mlp(hidden[0], hidden[1:], 2 * latents, act)) if hidden \
            else nn.Identity()
        ctx = [context_dim] if context_dim else []
        self.first = ConditionalMLP(ctx, hidden, 2 * latents, act) if context_dim and first == "network" else None

    def forward(
        self, evidence: Tensor, context: Tensor | None = None, prior_raw: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``[..., N]`` from the evidence ``[B, ·]`` and ``z_{l-1}`` ``[k, B, N]``.

        ``prior_raw``: the prior layer's unconstrained ``(μ_p, a_p)``, needed when the first estimate is the prior.
        """
        ctx = context_inputs(context, self.context_dim)
        return self.from_context_features(evidence, [m(*ctx) for m in self.context_linears()], prior_raw)

    def context_linears(self) -> list[nn.Linear]:
        """The linear maps of ``z_{l-1}`` this layer starts with (the residual's, the first estimate's), which
        :meth:`from_context_features` continues from: SeRe-VAE's chain applies them, with the bijector's, as one
        matrix product."""
        first = None if self.first is None else self.first.input_maps[0]
        return [m for m in (self.context_map, first) if m is not None]

    def from_context_features(
        self, evidence: Tensor, features: Sequence[Tensor], prior_raw: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` from ``features``, the outputs of :meth:`context_linears` on ``z_{l-1}`` (in order)."""
        h = evidence if self.context_map is None else evidence + features[0]
        params = self.residual(h)
        if self.first is not None:
            params = params + self.first.from_first(features[-1])
        elif self.first_estimate == "prior":
            if prior_raw is None:
                raise ValueError("this posterior's first estimate is the prior: pass the prior's raw output")
            params = params + prior_raw
        return mean_and_std(params)


#: rows (samples × examples) from which the data layers run block by block (see ``log_likelihood``)
BLOCKWISE_ROWS = 512


class DataLayers(nn.Module, ABC):
    """The data layers ``p(x_l | z_l, x_{l-1})``, ``l = 1..L``, of a stack of stochastic layers."""

    @abstractmethod
    def log_likelihood(self, codes: Tensor, x: Tensor) -> Tensor:
        """``log p(x | z)`` ``[k, B]`` from the codes ``z_1..z_L`` ``[L, k, B, N]`` and the image ``x`` ``[B, D]``,
        teacher-forced: each block's layer sees the *observed* previous block."""

    @abstractmethod
    def sample(self, layer: int, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """A draw of block ``layer`` (0-based) given ``z_l`` ``[n, N]`` and the previous block (None for the first)."""


class IndependentDataLayers(DataLayers):
    """One module per block, each with ``log_prob(block, z, x_prev) -> [k, B]`` and ``sample(z, x_prev)``."""

    def __init__(self, block_sizes: Sequence[int], layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block_sizes, self.layers = tuple(block_sizes), nn.ModuleList(layers)

    def log_likelihood(self, codes: Tensor, x: Tensor) -> Tensor:
        blocks = x.split(self.block_sizes, dim=-1)
        previous = [None, *blocks[:-1]]
        return sum(layer.log_prob(block, z, x_prev)
                   for layer, block, z, x_prev in zip(self.layers, blocks, codes, previous))

    def sample(self, layer: int, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        return self.layers[layer].sample(z, x_prev)


class ResidualBernoulliLayers(DataLayers):
    """Data layers of all blocks: logits ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` of ``p(x_l | z_l, x_{l-1})``.

    ``γ¹`` is one grouped MLP over the ``L`` blocks and ``δγ`` one over blocks ``2..L`` (block 1 has no previous
    block). They work in block layout ``[L, ..., D_1]``, the last (smaller) block's logits zero-padded: every
    block but the last must have the same size, as raster blocks do. ``data_mean`` (training pixel means) starts
    ``γ¹`` at the data's marginal, as Burda et al. (2016) do for their decoders.
    """

    def __init__(
        self, block_sizes: Sequence[int], latents: int, hidden: Sequence[int], act: str,
        data_mean: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.block_sizes = tuple(block_sizes)
        size, layers = self.block_sizes[0], len(self.block_sizes)
        if any(s != size for s in self.block_sizes[:-1]) or self.block_sizes[-1] > size:
            raise ValueError(f"every block but a smaller last one must have the same size, got {list(block_sizes)}")
        self.first = GroupedMLP(layers, [latents], hidden, self.block_sizes, act)
        self.residual = GroupedMLP(layers - 1, [size, latents], hidden, self.block_sizes[1:], act) \
            if layers > 1 else None
        if data_mean is not None:
            self.first.output_layer.set_bias(marginal_logits(data_mean))

    def previous_blocks(self, x: Tensor) -> Tensor:
        """``[..., D] → [L − 1, ..., D_1]``: the image's blocks ``x_1..x_{L−1}`` (all of the full size), each the
        previous block of a residual data layer."""
        size, layers = self.block_sizes[0], len(self.block_sizes)
        full = x[..., : size * (layers - 1)].unflatten(-1, (layers - 1, size))
        return full.movedim(-2, 0).contiguous()  # plain strides: faster kernels

    def logits(self, codes: Tensor, x: Tensor) -> Tensor:
        """Teacher-forced logits of every block, ``[L, k, B, D_1]`` (block ``l``'s are ``[l, ..., :D_l]``), from the
        codes ``z_1..z_L`` ``[L, k, B, N]`` and the *observed* image ``x`` ``[B, D]``."""
        logits = self.first(codes)
        if self.residual is not None:
            previous = self.previous_blocks(x).unsqueeze(1)  # x_1..x_{L-1}: [L-1, 1, B, D_1]
            logits[1:] += self.residual(previous, codes[1:])  # in place: no copy of all the logits
        return logits

    def log_likelihood(self, codes: Tensor, x: Tensor) -> Tensor:
        """``log p(x | z)`` ``[k, B]``, teacher-forced, summed over every block's pixels.

        All blocks in one batched product when each block has few rows (samples × examples: a training batch);
        block by block when they are many (importance sampling), where each block's products are large enough
        on their own and its intermediates stay in the CPU's cache (all blocks at once was up to 2× slower).
        """
        blocks = x.split(self.block_sizes, dim=-1)
        if codes[0].numel() // codes.shape[-1] < BLOCKWISE_ROWS:
            logits = self.block_logits(self.logits(codes, x))
        else:
            logits = [self.layer(l, z, blocks[l - 1] if l else None) for l, z in enumerate(codes)]
        return sum(bernoulli_log_prob(block.expand_as(g), g) for block, g in zip(blocks, logits))

    def block_logits(self, logits: Tensor) -> list[Tensor]:
        """The logits of each block, ``[..., D_l]``, from their block layout ``[L, ..., D_1]`` (views)."""
        return [g[..., :size] for g, size in zip(logits, self.block_sizes)]

    def layer(self, layer: int, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """Logits ``[..., D_l]`` of block ``layer`` (0-based) alone, from ``z_l`` and the previous block."""
        logits = self.first.group(layer, z)
        if layer == 0:
            return logits
        if x_prev is None:
            raise ValueError("this data layer has a residual term and needs the previous block")
        return logits + self.residual.group(layer - 1, x_prev, z)

    def sample(self, layer: int, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.layer(layer, z, x_prev)))
