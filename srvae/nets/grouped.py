"""Grouped layers: ``G`` independent networks of the same shape evaluated as one batched operation.

SeRe-VAE (Apostolopoulou et al. 2020) has one network per stochastic layer wherever a layer's computation does
not depend on the layers before it: the ``L`` deterministic encoders of ``x`` (each reads the same image), the
``L`` teacher-forced data layers ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` once every code is drawn, and the
``L − 1`` amortised priors ``p(ε_l | z_{l-1})``. Stored as stacked weights they run as a few batched matrix
products (``torch.baddbmm``) instead of ``L`` small ones, and give the optimiser a few large tensors instead
of many small ones.

- :class:`GroupedLinear` — ``G`` linear maps ``[G, ..., in] → [G, ..., out]``, weight ``[G, in, out]``;
- :class:`BlockLinear` — ``G`` linear maps with their own output sizes (SeRe-VAE's image blocks), zero-padded to
  the largest: ``[G, ..., in] → [G, ..., max out_g]``;
- :class:`GroupedMLP` — ``G`` independent :class:`~srvae.nets.mlp.ConditionalMLP`\\ s: several inputs summed in
  the first layer, or one input shared by every group (then the first layer is one ``nn.Linear(in, G·H)``).

Every group is initialised as PyTorch initialises a ``nn.Linear`` of its own shape (weight and bias uniform on
``±1/√in``, ``in`` the group's own fan-in), so that a grouped network is distributed exactly as the ``G``
separate ones it replaces (``docs/decisions.md``, "Speed"). ``group(g, ...)`` evaluates one group alone, for
the code that is sequential by nature (sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import groupby

import torch
from torch import Tensor, nn

from .mlp import activation


def _linear_init_(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """``nn.Linear``'s default initialisation: weight and bias uniform on ``±1/√fan_in``."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


def side_by_side(layers: Sequence[Sequence[nn.Linear]]) -> list[tuple[Tensor, Tensor] | None]:
    """Each layer's linear maps of one input as one map: weight ``[in, Σ out]`` and bias ``[Σ out]`` (zero where a
    map has none), for ``torch.addmm(bias, x, weight).split(...)``; None for a layer without maps.

    Applied so, a layer's maps cost one matrix product and one split (forward and backward) instead of a product,
    a transpose and a bias per map. The weights of every layer are assembled together (a stack per map, one
    cat, one unbind), so that assembling them costs a few calls per step, not per layer: every layer with maps has
    as many as the others, of the same shapes (else ``torch.stack`` fails).
    """
    present = [l for l, maps in enumerate(layers) if maps]
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(layers)
    if not present:
        return out
    columns = list(zip(*(layers[l] for l in present), strict=True))  # per map, that map of every layer
    # [layers, Σ out, in]: each layer's map is read transposed, so that each parameter's gradient comes back
    # contiguous (a transposed stack would cost a copy per parameter where the gradients are accumulated)
    weight = torch.cat([torch.stack([m.weight for m in maps]) for maps in columns], 1)
    bias = torch.cat([torch.stack([m.bias for m in maps]) if maps[0].bias is not None
                      else weight.new_zeros(len(present), maps[0].out_features) for maps in columns], 1)
    for l, w, b in zip(present, weight.unbind(0), bias.unbind(0)):
        out[l] = (w.t(), b)
    return out


class GroupedLinear(nn.Module):
    """``G`` independent linear maps ``y_g = x_g W_g + b_g``, one batched matrix product for all of them.

    ``weight[g]`` is ``[in, out]`` (the transpose of ``nn.Linear``'s, which batched products read fastest).
    """

    def __init__(self, groups: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features)) if bias else None
        _linear_init_(self.weight, self.bias, in_features)

    def forward(self, x: Tensor) -> Tensor:
        """``[G, ..., in] → [G, ..., out]``."""
        flat = x.reshape(self.groups, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(flat, self.weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight)
        return out.view(*x.shape[:-1], self.out_features)

    def group(self, g: int, x: Tensor) -> Tensor:
        """Group ``g``'s map alone: ``[..., in] → [..., out]``."""
        return nn.functional.linear(x, self.weight[g].t(), None if self.bias is None else self.bias[g])

    def extra_repr(self) -> str:
        return f"groups={self.groups}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class BlockLinear(nn.Module):
    """``G`` linear maps of ``in`` features with their own output sizes ``out_sizes``, as one batched product:
    ``[G, ..., in] → [G, ..., max(out_sizes)]``, each group's output zero beyond its own size.

    The parameters are those of the ``G`` maps (consecutive groups of equal size stored as one
    :class:`GroupedLinear`); the zero padding exists only in the weight assembled for the product. SeRe-VAE's
    data layers output raster image blocks this way: 9 × 79 + 73 pixels for 10 blocks.
    """

    def __init__(self, in_features: int, out_sizes: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        self.out_sizes = tuple(out_sizes)
        self.groups, self.out_features = len(self.out_sizes), max(self.out_sizes)
        runs = [(size, len(list(members))) for size, members in groupby(self.out_sizes)]
        self.runs = nn.ModuleList(GroupedLinear(n, in_features, size, bias) for size, n in runs)

    def _padded(self, parameter: str) -> Tensor:
        """The runs' weights (or biases) zero-padded in their output dimension and stacked: ``[G, (in,) out_max]``."""
        return torch.cat([nn.functional.pad(getattr(run, parameter), (0, self.out_features - run.out_features))
                          for run in self.runs])

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(self.groups, -1, x.shape[-1])
        weight = self._padded("weight")
        if self.runs[0].bias is None:
            out = torch.bmm(flat, weight)
        else:
            out = torch.baddbmm(self._padded("bias").unsqueeze(1), flat, weight)
        return out.view(*x.shape[:-1], self.out_features)

    def group(self, g: int, x: Tensor) -> Tensor:
        """Group ``g``'s map alone: ``[..., in] → [..., out_g]`` (no padding)."""
        for run in self.runs:
            if g < run.groups:
                return run.group(g, x)
            g -= run.groups
        raise IndexError("group index out of range")

    @torch.no_grad()
    def set_bias(self, bias: Tensor) -> None:
        """Set every group's bias from their concatenation ``[Σ out_g]``."""
        for run, part in zip(self.runs, bias.split([r.groups * r.out_features for r in self.runs])):
            run.bias.copy_(part.view_as(run.bias))


def _grouped_linear(groups: int, in_features: int, out: int | Sequence[int], bias: bool = True) -> nn.Module:
    return BlockLinear(in_features, out, bias) if isinstance(out, Sequence) else GroupedLinear(groups, in_features, out, bias)


class GroupedMLP(nn.Module):
    """``G`` independent MLPs ``in_dims → hidden → out``, each a :class:`~srvae.nets.mlp.ConditionalMLP`.

    Inputs are ``[G, ..., d_i]`` (one slice per group), summed after their first-layer maps with broadcasting
    over the middle dimensions (e.g. an observed block ``[G, 1, B, ·]`` against codes ``[G, k, B, ·]``); the bias
    lives in the first input's map. ``shared_input=True``: a single input ``[..., d]`` read by every group, and the
    first layer is one ``nn.Linear(d, G · hidden[0])``. ``out`` is an int (output ``[G, ..., out]``), a sequence
    of per-group sizes (:class:`BlockLinear`: output ``[G, ..., max out_g]``, zero beyond each group's size), or
    ``None``: the network ends with the last hidden activation (a feature extractor, ``[G, ..., hidden[-1]]``).
    """

    def __init__(
        self, groups: int, in_dims: Sequence[int], hidden: Sequence[int], out: int | Sequence[int] | None,
        act: str, shared_input: bool = False,
    ) -> None:
        super().__init__()
        if not in_dims or (shared_input and len(in_dims) != 1):
            raise ValueError("a grouped MLP has at least one input, and exactly one when it is shared")
        if out is None and not hidden:
            raise ValueError("a grouped feature extractor (out=None) needs a hidden layer")
        self.groups, self.shared_input = groups, shared_input
        widths = [*hidden, *([] if out is None else [out])]
        first, later = widths[0], widths[1:]
        if shared_input:  # every group reads the same x: one matrix product, ``nn.Linear``'s own initialisation
            if isinstance(first, Sequence):
                raise ValueError("a shared input needs a hidden layer before per-group output sizes")
            self.input_maps = nn.ModuleList([nn.Linear(in_dims[0], groups * first)])
        else:
            self.input_maps = nn.ModuleList(_grouped_linear(groups, d, first, i == 0) for i, d in enumerate(in_dims))
        self.act = activation(act)
        self.layers = nn.ModuleList(_grouped_linear(groups, w_in, w_out) for w_in, w_out in zip(widths, later))
        self.ends_with_activation = out is None

    @property
    def output_layer(self) -> nn.Module:
        """The last linear map (its bias is where a network's output starts)."""
        return self.layers[-1] if self.layers else self.input_maps[0]

    def _first(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != len(self.input_maps):
            raise ValueError(f"expected {len(self.input_maps)} inputs, got {len(inputs)}")
        if self.shared_input:
            h = self.input_maps[0](inputs[0])  # [..., G·H]
            return h.unflatten(-1, (self.groups, -1)).movedim(-2, 0)
        h = self.input_maps[0](inputs[0])
        for m, x in zip(self.input_maps[1:], inputs[1:]):
            h = h + m(x)
        return h

    def forward(self, *inputs: Tensor) -> Tensor:
        return self._rest(self._first(inputs), lambda layer, h: layer(h))

    def group(self, g: int, *inputs: Tensor) -> Tensor:
        """Group ``g``'s network alone, on inputs without the group dimension."""
        if self.shared_input:
            first = self.input_maps[0]
            width = first.out_features // self.groups
            rows = slice(g * width, (g + 1) * width)
            h = nn.functional.linear(inputs[0], first.weight[rows], first.bias[rows])
        else:
            h = self.input_maps[0].group(g, inputs[0])
            for m, x in zip(self.input_maps[1:], inputs[1:]):
                h = h + m.group(g, x)
        return self._rest(h, lambda layer, h: layer.group(g, h))

    def _rest(self, h: Tensor, apply: Callable[[nn.Module, Tensor], Tensor]) -> Tensor:
        """The layers after the first, each applied (to all groups, or to one) by ``apply``."""
        for layer in self.layers:
            h = apply(layer, self.act(h))
        return self.act(h) if self.ends_with_activation else h
