"""Small network builders shared by SeRe-VAE and the baselines."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .distributions import marginal_logits

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


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
