"""Neural spline coupling flow (Durkan et al. 2019, "Neural Spline Flows", RQ-NSF (C)) as a conditional bijector.

Each coupling layer splits ``x`` by a mask into ``(x_a, x_b)``, keeps ``x_a`` and maps every ``x_b`` coordinate
through a monotonic rational-quadratic spline on ``[−B, B]`` (identity outside) whose ``K`` bin widths, ``K``
heights and ``K − 1`` inner knot derivatives come from an MLP of ``(x_a, context)``. Layers alternate the
mask (odd, then even coordinates kept), so two layers transform every coordinate.

The spline itself is zuko's (``zuko.flows.coupling.GeneralCouplingTransform`` with
``zuko.transforms.MonotonicRQSTransform``): a maintained implementation rather than a hand-written one. This
module only adapts it to the contract of :mod:`srvae.flows.base` (``forward(x, context) -> (y, log|det|)``)
and starts it near the identity: the hyper-network's output layer is scaled down, and zero spline parameters
are the identity map (equal bins, unit derivatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.transforms import MonotonicRQSTransform

from srvae.nets.mlp import ACTIVATIONS

from .base import Bijector


class SplineCouplingFlow(Bijector):
    """``layers`` rational-quadratic spline coupling transforms with alternating masks, conditioned on a context."""

    def __init__(
        self, features: int, context_features: int | None = None, layers: int = 2, bins: int = 8,
        hidden: Sequence[int] = (64,), act: str = "relu", bound: float = 5.0, init_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if features < 2:
            raise ValueError(f"a coupling flow needs at least 2 features to split, got {features}")
        spline = partial(MonotonicRQSTransform, bound=bound)
        self.transforms = nn.ModuleList(
            GeneralCouplingTransform(features, context_features or 0, mask=torch.arange(features) % 2 == t % 2,
                                     univariate=spline, shapes=[(bins,), (bins,), (bins - 1,)],
                                     hidden_features=tuple(hidden), activation=ACTIVATIONS[act])
            for t in range(layers)
        )
        with torch.no_grad():  # near the identity at the start, as SeRe-VAE's affine bijector
            for transform in self.transforms:
                output = transform.hyper[-1]
                output.weight.mul_(init_scale)
                output.bias.mul_(init_scale)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = x.new_zeros(x.shape[:-1])
        for transform in self.transforms:
            x, ladj = transform(context).call_and_ladj(x)
            logabsdet = logabsdet + ladj
        return x, logabsdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = y.new_zeros(y.shape[:-1])
        for transform in reversed(self.transforms):
            y, ladj = transform(context).inv.call_and_ladj(y)
            logabsdet = logabsdet + ladj
        return y, logabsdet
