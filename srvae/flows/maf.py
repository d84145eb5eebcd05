"""Masked autoregressive flow (Papamakarios, Pavlakou & Murray 2017), optionally conditioned on a context.

One MAF layer is a MADE with Gaussian conditionals (the MAF paper's eqs. 2–3): with ``[μ, α] = MADE(x, c)``,
where ``μ_i, α_i`` depend on ``x_{<i}`` (in the layer's ordering) and on the context ``c``,

    u_i = (x_i − μ_i) exp(−α_i),        log|det ∂u/∂x| = −Σ_i α_i.

The contract of :mod:`srvae.flows.base` is followed with ``forward`` the density direction ``x → u`` (one MADE
pass, as nflows' MAF transforms do) and ``inverse`` the generating direction ``u → x``, which takes ``D``
sequential passes: pass ``t`` sets the coordinate that comes ``t``-th in the ordering from the ``t − 1`` set
before it (the others stay 0, so an unfinished coordinate never feeds a huge value into the network); its
scale is capped at ``exp(10)`` as in the MAF code (:data:`MAX_LOG_SCALE`).

:class:`MaskedAutoregressiveFlow` stacks such layers with the input order reversed between layers and, as in
the MAF paper, a batch-norm layer (:mod:`srvae.flows.batch_norm`) after each MADE. The context (SeRe-MAF's
latent code) enters every MADE's first hidden layer, and the MADEs' degree-0 units carry it to every output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .base import Bijector
from .batch_norm import BatchNormBijector
from .made import MADE, ordering_degrees

#: when generating, each conditional's scale exp(α) is capped at exp(10), as the MAF code does: a sample that
#: wanders off the data would otherwise grow without bound through the stack (density evaluation is unaffected)
MAX_LOG_SCALE = 10.0


class MAFLayer(Bijector):
    """One Gaussian MADE: ``u = (x − μ(x_{<i}, c)) exp(−α(x_{<i}, c))``, in the identity or reversed ordering."""

    def __init__(
        self, features: int, hidden: Sequence[int], context_features: int | None = None, reverse: bool = False,
        act: str = "relu", init_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.made = MADE(features, hidden, 2, context_features, ordering_degrees(features, reverse), act)
        with torch.no_grad():  # start near the identity (μ ≈ 0, α ≈ 0): stacked layers then do not blow up at first
            self.made.output.weight.mul_(init_scale)
            self.made.output.bias.zero_()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, alpha = self.made(x, context).unbind(-2)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(u)
        if context is not None:  # every sample of a [k, B] batch needs its own x
            x = x.expand(*torch.broadcast_shapes(u.shape[:-1], context.shape[:-1]), u.shape[-1]).clone()
        for degree in range(1, u.shape[-1] + 1):  # pass t sets the coordinate of degree t; the rest stay 0
            mu, alpha = self.made(x, context).unbind(-2)
            alpha = alpha.clamp(max=MAX_LOG_SCALE)
            x = torch.where(self.made.input_degrees == degree, u * torch.exp(alpha) + mu, x)
        return x, alpha.sum(-1)


class MaskedAutoregressiveFlow(Bijector):
    """``mades`` MAF layers, orderings alternating (identity, reversed, …), each followed by batch norm if asked."""

    def __init__(
        self, features: int, mades: int, hidden: Sequence[int], context_features: int | None = None,
        batch_norm: bool = True, act: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[Bijector] = []
        for t in range(mades):
            layers.append(MAFLayer(features, hidden, context_features, reverse=t % 2 == 1, act=act))
            if batch_norm:
                layers.append(BatchNormBijector(features))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = x.new_zeros(())
        for layer in self.layers:
            x, layer_logabsdet = layer(x, context)
            logabsdet = logabsdet + layer_logabsdet
        return x, logabsdet

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = u.new_zeros(())
        for layer in reversed(self.layers):
            u, layer_logabsdet = layer.inverse(u, context)
            logabsdet = logabsdet + layer_logabsdet
        return u, logabsdet

    @torch.no_grad()
    def set_batch_norm_statistics(self, batches: Iterable[Tensor]) -> None:
        """Give every batch-norm layer the exact statistics of its inputs over ``batches`` (unconditional flow).

        Layer by layer, as one pass over the whole set would: each layer's inputs are computed with the final
        statistics of the layers below it (the MAF paper's test-time statistics, over the training set).
        """
        inputs = list(batches)
        for layer in self.layers:
            if isinstance(layer, BatchNormBijector):
                layer.set_statistics(inputs)
            was_training = layer.training
            layer.eval()
            inputs = [layer(x)[0] for x in inputs]
            layer.train(was_training)
