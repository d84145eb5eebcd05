"""MLP builders shared by SeRe-VAE and the baselines, and the types their hyper-parameters are checked against.

- :func:`mlp` — a plain ``in → hidden… → out`` network (or a feature extractor without the output layer);
- :class:`ConditionalMLP` — an MLP of several inputs (e.g. a latent code and an encoding of ``x``), or a
  learned constant when it has none: the "block" that SeRe-VAE's layers and bijectors are made of.

``PositiveInt``, ``Widths`` and ``Activation`` are the annotations model configs use, so that a config is
checked (types, ranges, activation names) when it is loaded, not when a job builds the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, get_args

import pydantic
import torch
from torch import Tensor, nn

from srvae.distributions import marginal_logits

#: an integer ≥ 1 (a width, a number of layers or latents)
PositiveInt = Annotated[int, pydantic.Field(ge=1)]
#: the hidden widths of an MLP, input side first (may be empty: no hidden layer)
Widths = tuple[PositiveInt, ...]
#: the activation names a config may use
Activation = Literal["tanh", "relu", "elu", "leaky_relu", "softplus", "gelu"]

ACTIVATIONS: dict[str, type[nn.Module]] = dict(
    zip(get_args(Activation), (nn.Tanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Softplus, nn.GELU))
)


def activation(name: str) -> nn.Module:
    """The activation module called ``name``; a clear error lists the valid names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}") from None


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, act: str) -> nn.Sequential:
    """``in_dim → hidden[0] → … → hidden[-1] (→ out_dim)``, ``act`` after every hidden layer.

    With ``out_dim=None`` the network ends with the last hidden activation (a feature extractor).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation(act)]
        width = h
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def init_output_bias(layer: nn.Linear, data_mean: Tensor | None) -> None:
    """Start a Bernoulli decoder at the data's marginal: bias = logit(pixel mean) (Burda et al. 2016)."""
    if data_mean is not None:
        with torch.no_grad():
            layer.bias.copy_(marginal_logits(data_mean))


def mlp_out_dim(in_dim: int, hidden: Sequence[int]) -> int:
    """Width of the features :func:`mlp` returns with ``out_dim=None``."""
    return hidden[-1] if hidden else in_dim


class ConditionalMLP(nn.Module):
    """An MLP of several inputs ``in_dims → hidden → out_dim``; with no inputs, a learned constant.

    The first layer is one linear map per input, summed — the same function and parameter count as one
    linear map of the concatenated inputs — so that an input shared by the ``k`` importance samples (an
    encoding of ``x``, an observed block) is mapped once and broadcast against ``[k, B, ·]`` inputs.
    """

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], out_dim: int, act: str) -> None:
        super().__init__()
        self.in_dims = tuple(in_dims)
        if not self.in_dims:
            self.constant = nn.Parameter(torch.zeros(out_dim))
            return
        first = hidden[0] if hidden else out_dim
        # the bias lives in the first input's map only: Σ_i W_i x_i + b
        self.input_maps = nn.ModuleList(nn.Linear(d, first, bias=i == 0) for i, d in enumerate(self.in_dims))
        self.rest = nn.Sequential(activation(act), mlp(first, hidden[1:], out_dim, act)) if hidden else None

    def forward(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.in_dims):
            raise ValueError(f"expected {len(self.in_dims)} inputs, got {len(inputs)}")
        if not inputs:
            return self.constant
        h = self.input_maps[0](inputs[0])
        for m, x in zip(self.input_maps[1:], inputs[1:]):
            h = h + m(x)
        return self.from_first(h)

    def from_first(self, h: Tensor) -> Tensor:
        """The network after its first layer's linear maps, from their summed output ``h`` (a caller that applies
        those maps itself, fused with others: SeRe-VAE's chain)."""
        return h if self.rest is None else self.rest(h)

    @torch.no_grad()
    def init_output(self, bias: Tensor | float, where: slice = slice(None), weight_scale: float = 1.0) -> None:
        """Set the bias of the outputs ``where`` to ``bias`` and scale the weights into them by ``weight_scale``.

        Without inputs the output is the constant itself, and ``weight_scale`` has nothing to act on.
        """
        if not self.in_dims:
            self.constant[where] = bias
            return
        last = self.rest[-1][-1] if self.rest is not None else self.input_maps[0]
        last.bias[where] = bias
        if self.rest is not None:
            last.weight[where] *= weight_scale
        else:
            for m in self.input_maps:
                m.weight[where] *= weight_scale
