"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015), with a context input.

Each input dimension ``i`` has a degree ``d(i) ∈ {1..D}`` (its position in the autoregressive ordering); hidden
unit ``k`` has a degree ``m(k)``. Masks keep a connection input ``i`` → hidden ``k`` iff ``m(k) ≥ d(i)``,
hidden ``k`` → hidden ``k'`` iff ``m(k') ≥ m(k)``, and hidden ``k`` → output ``i`` iff ``d(i) > m(k)``, so
output ``i`` depends only on inputs that come strictly before ``i`` in the ordering: the Jacobian of the output
w.r.t. the input is strictly triangular under that ordering.

The context (IAF's encoder feature ``h``, or the previous latent code ``z_{l−1}`` in a self-reflective IAF)
enters the first hidden layer unmasked. Hidden degrees start at 0 when there is a context: degree-0 units see
the context but no input, so that every output — the first one in the ordering included — can depend on the
context (the "mask offset so that z is never masked" of SeRe-MAF). Hidden degrees are assigned cyclically
(deterministic, as in the IAF paper's autoregressive MLP) when a layer has a unit for every degree it may hold;
a layer narrower than that draws them at random (Germain et al.'s scheme, which the MAF paper uses for
CIFAR-10's 3,072 inputs in layers of 1,024 or 2,048 units): cyclic degrees would then stop below ``D − 1`` and
the later inputs would reach no output at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srvae.nets.mlp import activation


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a fixed binary mask ``M`` of shape ``[out, in]``."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def ordering_degrees(features: int, reverse: bool = False) -> Tensor:
    """Input degrees ``1..D`` of the identity ordering, or ``D..1`` of the reversed one."""
    degrees = torch.arange(1, features + 1)
    return degrees.flip(0) if reverse else degrees


def hidden_unit_degrees(width: int, lowest: int, features: int) -> Tensor:
    """Degrees of a hidden layer of ``width`` units, in ``lowest..D−1`` (a unit of degree ``D`` could reach no output).

    Cyclic (every degree in turn) when the layer has a unit per degree, else drawn uniformly at random from
    torch's generator (the masks are buffers: saved and restored with the weights), with the first unit pinned to
    ``lowest`` so that every layer keeps a path from the context (degree 0) to every output.
    """
    span = max(features - lowest, 1)
    if width >= span:
        return torch.arange(width) % span + lowest
    degrees = torch.randint(lowest, lowest + span, (width,))
    degrees[0] = lowest
    return degrees


class MADE(nn.Module):
    """Autoregressive network ``x ↦ [..., outputs_per_feature, D]``: entry ``[j, i]`` depends on ``x_{<i}`` only.

    ``input_degrees`` fixes the ordering (a permutation of ``1..D``; default the identity ordering);
    ``context_features`` adds an unmasked context input to the first hidden layer.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        outputs_per_feature: int = 2,
        context_features: int | None = None,
        input_degrees: Tensor | None = None,
        act: str = "elu",
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        if input_degrees is None:
            input_degrees = ordering_degrees(features)
        if sorted(input_degrees.tolist()) != list(range(1, features + 1)):
            raise ValueError(f"input_degrees must be a permutation of 1..{features}, got {input_degrees.tolist()}")
        self.features, self.outputs_per_feature = features, outputs_per_feature
        self.register_buffer("input_degrees", input_degrees.clone())

        lowest = 0 if context_features else 1  # degree-0 units carry the context to every output
        layers: list[nn.Module] = []
        degrees = input_degrees
        for width in hidden:
            hidden_degrees = hidden_unit_degrees(width, lowest, features)
            layers.append(MaskedLinear(hidden_degrees[:, None] >= degrees[None, :]))
            degrees = hidden_degrees
        self.hidden = nn.ModuleList(layers)
        self.act = activation(act)
        self.context = nn.Linear(context_features, hidden[0]) if context_features else None
        output_degrees = input_degrees.repeat(outputs_per_feature)  # output j * D + i has degree d(i)
        self.output = MaskedLinear(output_degrees[:, None] > degrees[None, :])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.hidden[0](x)
        if self.context is not None:
            if context is None:
                raise ValueError("this MADE was built with a context input; pass context")
            h = h + self.context(context)
        h = self.act(h)
        for layer in self.hidden[1:]:
            h = self.act(layer(h))
        return self.output(h).unflatten(-1, (self.outputs_per_feature, self.features))
