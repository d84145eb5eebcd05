"""Weight-normalised residual convolutional stacks: the ResNet blocks of the convolutional models (Table 2).

The SeRe-VAE paper's Table 2 uses "ResNets as in Salimans et al. (2015)"; ``docs/decisions.md`` ("Convolutional
models") reads that as the residual block of the IAF paper's MNIST ResNet VAE (Kingma, Salimans et al. 2016; the
authors' code, github.com/openai/iaf), which this module rebuilds:

- the image is zero-padded by 2 pixels on every side (MNIST: 28 → 32), a 5×5 stride-2 convolution maps it to
  ``channels`` feature maps at half resolution (16×16), and a downsampling block halves it again (8×8);
- a residual block is ``h ← resample(h) + 0.1 · conv₂(elu(conv₁(elu(h))))`` with 3×3 kernels; a downsampling
  block strides ``conv₁`` by 2 and subsamples the skip path (nearest neighbour), an upsampling block makes
  ``conv₂`` a sub-pixel convolution (:class:`WNUpsample2d`) and repeats the skip path's pixels (nearest
  neighbour);
- every linear map and convolution is weight-normalised, ``w = g · v / ‖v‖`` per output unit (Salimans & Kingma
  2016), with the data-dependent initialisation: on one batch, ``g`` and ``b`` are set so that each output unit's
  pre-activation has mean 0 and standard deviation ``init_scale`` (1 unless stated). It runs once, inside
  :func:`data_dependent_init`, before the first update; the ``initialised`` buffer is saved with the weights, so
  a model restored from a checkpoint is never initialised again.

:class:`Encoder` maps an image to flat features (``depths``: residual blocks at half and at quarter resolution,
the IAF's MNIST model has ``(2, 2)``); :class:`Decoder` mirrors it from a latent vector to the logits of chosen
pixels, computing only the rows that hold them, and takes optional feature maps at half resolution (SeRe-VAE's
previous image block enters there).

The dense blocks on a latent code get the same residual form (:class:`DenseResidualBlock`,
``h ← h + 0.1 · W₂ act(W₁ act(h))``, plain linear maps with PyTorch's initialisation): :func:`with_dense_blocks`
inserts them after the first map of a dense network (:class:`~srvae.nets.mlp.ConditionalMLP` or the hidden part of
one), :class:`ResidualGroupedMLP` after that of a :class:`~srvae.nets.grouped.GroupedMLP`.
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srvae.distributions import marginal_logits
from srvae.nets.grouped import GroupedLinear, GroupedMLP
from srvae.nets.mlp import activation

#: the scale of every residual branch (the IAF's ``input + 0.1 * conv(...)``)
RESIDUAL_SCALE = 0.1
#: the input convolution's kernel; every other convolution is 3×3
IMAGE_KERNEL = 5
#: residual blocks at half and at quarter resolution, the second stage's first (encoder) or last (decoder) one
#: resampling: the config annotation of the ResNets' ``depths``
Depths = tuple[Annotated[int, pydantic.Field(ge=0)], Annotated[int, pydantic.Field(ge=1)]]


def _along(t: Tensor, axis: int, ndim: int) -> Tensor:
    """``t`` ``[n]`` shaped to broadcast along ``axis`` of an ``ndim``-dimensional tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return t.view(shape)


class WeightNormed(nn.Module):
    """A linear map ``f(x; g · v/‖v‖) + b`` with one gain ``g`` and bias ``b`` per output unit.

    Subclasses say how the weight is applied (:meth:`apply_weight`) and which axis of the output indexes the output
    units (``output_axis``); the first axis of ``v`` does.
    """

    output_axis = 1

    def __init__(self, v_shape: tuple[int, ...], out_features: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(v_shape) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features))
        self.b = nn.Parameter(torch.zeros(out_features))
        self.init_scale = init_scale
        self.register_buffer("initialised", torch.tensor(False))
        self._initialising = False  # set only inside data_dependent_init

    @abstractmethod
    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        """``f(x; weight)`` without the bias."""

    def weight(self) -> Tensor:
        """``g · v / ‖v‖``, each output unit's weights normalised on their own."""
        return _along(self.g / torch.linalg.vector_norm(self.v.flatten(1), dim=1), 0, self.v.ndim) * self.v

    def forward(self, x: Tensor) -> Tensor:
        if self._initialising and not self.initialised:
            self._initialise(x)
        y = self.apply_weight(x, self.weight())
        return y + _along(self.b, self.output_axis, y.ndim)

    @torch.no_grad()
    def _initialise(self, x: Tensor) -> None:
        """Set ``g`` and ``b`` so that every output unit has mean 0 and sd ``init_scale`` on the batch ``x``."""
        self.g.fill_(1.0)
        y = self.apply_weight(x, self.weight())
        unit = self.output_axis % y.ndim
        dims = [d for d in range(y.ndim) if d != unit]
        mean, std = y.mean(dims), y.std(dims).clamp_min(1e-6)
        self.g.copy_(self.init_scale / std)
        self.b.copy_(-mean * self.init_scale / std)
        self.initialised.fill_(True)


class WNLinear(WeightNormed):
    """Weight-normalised ``nn.Linear``: ``[..., in] → [..., out]``."""

    output_axis = -1

    def __init__(self, in_features: int, out_features: int, init_scale: float = 1.0) -> None:
        super().__init__((out_features, in_features), out_features, init_scale)

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)


class WNConv2d(WeightNormed):
    """Weight-normalised convolution with "same" padding; ``stride`` 2 halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1,
                 init_scale: float = 1.0) -> None:
        super().__init__((out_channels, in_channels, kernel, kernel), out_channels, init_scale)
        self.stride, self.padding = stride, kernel // 2

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class WNUpsample2d(nn.Module):
    """Doubles the resolution: a weight-normalised 3×3 convolution to 4 × ``out_channels`` maps, rearranged into
    ``out_channels`` maps twice as large (sub-pixel convolution, Shi et al. 2016).

    A stride-2 transposed convolution with a 3×3 or 5×5 kernel is a sub-pixel convolution with some of the 3×3
    taps fixed at zero; this one is several times faster on CPU. Each of the 4 phases of an output map is a unit
    of its own for the weight normalisation.
    """

    def __init__(self, in_channels: int, out_channels: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.conv = WNConv2d(in_channels, 4 * out_channels, 3, init_scale=init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


@contextlib.contextmanager
def data_dependent_init(module: nn.Module) -> Iterator[None]:
    """Within the block, the first forward pass initialises every weight-normalised layer of ``module`` that is not
    initialised yet, in the order the data reaches them (each sees its inputs through the layers before it,
    already initialised). Run one forward pass on a training batch inside it::

        with data_dependent_init(model):
            model.score(batch, 1)
    """
    layers = [m for m in module.modules() if isinstance(m, WeightNormed)]
    for m in layers:
        m._initialising = True
    try:
        with torch.no_grad():
            yield
    finally:
        for m in layers:
            m._initialising = False


class ResidualBlock(nn.Module):
    """``h ← resample(h) + 0.1 · conv₂(elu(conv₁(elu(h))))``, 3×3 kernels.

    ``resample``: ``"down"`` halves the resolution (``conv₁`` strided, skip path subsampled), ``"up"`` doubles it
    (``conv₂`` a sub-pixel convolution, skip path's pixels repeated), ``None`` keeps it.
    """

    def __init__(self, channels: int, resample: str | None = None) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.resample = resample
        self.conv1 = WNConv2d(channels, channels, stride=2 if resample == "down" else 1)
        self.conv2 = WNUpsample2d(channels, channels) if resample == "up" else WNConv2d(channels, channels)

    def forward(self, h: Tensor) -> Tensor:
        branch = self.conv2(F.elu(self.conv1(F.elu(h))))
        if self.resample == "down":
            h = h[..., ::2, ::2]
        elif self.resample == "up":
            h = h.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return h + RESIDUAL_SCALE * branch


def check_depths(depths: tuple[int, int]) -> tuple[int, int]:
    """``(blocks at half resolution ≥ 0, blocks at quarter resolution ≥ 1)``: the second stage holds the resampling
    block (the IAF code's ``depths``; its MNIST model has ``(2, 2)``)."""
    half, quarter = depths
    if half < 0 or quarter < 1:
        raise ValueError(f"depths must be (≥ 0, ≥ 1) residual blocks at half and quarter resolution, got {depths}")
    return half, quarter


def image_side(data_dim: int) -> int:
    """The side of a square image of ``data_dim`` pixels; anything else is an error."""
    side = math.isqrt(data_dim)
    if side * side != data_dim or side < 2:
        raise ValueError(f"the convolutional models need square images; {data_dim} pixels is not a square")
    return side


class ImageGeometry:
    """A square ``side × side`` image, zero-padded by 2 pixels on every side (the IAF's ``pad_x = 2``: MNIST's
    28 × 28 becomes 32 × 32) and up to ``padded``, a multiple of 4, so that it halves twice."""

    def __init__(self, data_dim: int) -> None:
        self.side = image_side(data_dim)
        self.padded = -(-(self.side + 4) // 4) * 4
        self.before = 2
        self.after = self.padded - self.side - self.before

    @property
    def low(self) -> int:
        """The side of the lowest resolution (a quarter of the padded side: MNIST 8)."""
        return self.padded // 4

    def to_padded_image(self, x: Tensor) -> Tensor:
        """``[..., side²]`` pixels → ``[N, 1, padded, padded]`` (leading dimensions flattened)."""
        image = x.reshape(-1, 1, self.side, self.side)
        return F.pad(image, (self.before, self.after, self.before, self.after))

    def band(self, pixels: slice) -> tuple[int, int]:
        """The rows ``[top, bottom)`` of the padded image that hold the flat ``pixels``, widened to multiples of 4
        so that the band halves twice as the image does."""
        first, last = range(self.side**2)[pixels][0], range(self.side**2)[pixels][-1]
        top = (self.before + first // self.side) // 4 * 4
        bottom = ((self.before + last // self.side) // 4 + 1) * 4
        return top, bottom

    def positions(self, pixels: slice, top: int) -> Tensor:
        """Where each of the flat ``pixels`` lies in the flattened rows ``top..`` of the padded image."""
        p = torch.arange(self.side**2)[pixels]
        return (self.before + p // self.side - top) * self.padded + self.before + p % self.side


class InputConvolution(nn.Module):
    """The 5×5 stride-2 convolution that maps an image ``[..., side²]`` to feature maps at half resolution."""

    def __init__(self, geometry: ImageGeometry, channels: int) -> None:
        super().__init__()
        self.geometry = geometry
        self.conv = WNConv2d(1, channels, IMAGE_KERNEL, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.geometry.to_padded_image(x))


class Encoder(nn.Module):
    """Image ``[B, side²]`` → features ``[B, channels · low²]``: the input convolution, ``depths[0]`` residual
    blocks at half resolution, ``depths[1]`` at quarter resolution (the first of them downsampling), ELU,
    flattened."""

    def __init__(self, data_dim: int, channels: int, depths: tuple[int, int]) -> None:
        super().__init__()
        geometry = ImageGeometry(data_dim)
        half, quarter = check_depths(depths)
        self.input = InputConvolution(geometry, channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(half)), ResidualBlock(channels, "down"),
                                    *(ResidualBlock(channels) for _ in range(quarter - 1)))
        self.out_dim = channels * geometry.low**2

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(self.blocks(self.input(x))).flatten(1)


class Decoder(nn.Module):
    """Latent vector ``[..., N]`` → logits ``[..., P]`` of the flat image's ``pixels`` (default all): the
    :class:`Encoder` mirrored, over the band of rows that holds ``pixels``.

    A dense map to ``channels`` feature maps at quarter resolution, ``depths[1]`` blocks there (the last of them
    upsampling), then (optionally) feature maps at half resolution added in (:meth:`forward`'s ``extra``),
    ``depths[0]`` blocks, ELU and a sub-pixel convolution back to full resolution (the mirror of the input
    convolution): the logits of ``pixels`` plus a bias per pixel. Only the rows that hold ``pixels`` (:meth:`ImageGeometry.band`) are computed: a
    decoder of one SeRe-VAE block costs in proportion to the block, not to the image. The output layer starts at
    sd 0.1 and the bias at the logits of ``pixel_mean`` (the training means of those pixels), so that the decoder
    starts near the data's marginal (Burda et al. 2016).
    """

    def __init__(self, data_dim: int, latents: int, channels: int, depths: tuple[int, int],
                 pixels: slice = slice(None), pixel_mean: Tensor | None = None) -> None:
        super().__init__()
        geometry = ImageGeometry(data_dim)
        half, quarter = check_depths(depths)
        self.top, bottom = geometry.band(pixels)
        self.low_shape = (channels, (bottom - self.top) // 4, geometry.low)
        self.dense = WNLinear(latents, math.prod(self.low_shape))
        self.low_blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(quarter - 1)),
                                        ResidualBlock(channels, "up"))
        self.high_blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(half)))
        self.output = WNUpsample2d(channels, 1, init_scale=0.1)
        self.register_buffer("positions", geometry.positions(pixels, self.top), persistent=False)
        self.half_rows = slice(self.top // 2, bottom // 2)
        n_pixels = len(self.positions)
        self.bias = nn.Parameter(torch.zeros(n_pixels) if pixel_mean is None else marginal_logits(pixel_mean))

    def forward(self, z: Tensor, extra: Tensor | None = None) -> Tensor:
        """Logits ``[..., P]`` from ``z`` ``[..., N]``. ``extra``: feature maps of the whole padded image at half
        resolution ``[B, channels, padded/2, padded/2]``; their rows in the band are added, broadcast over
        ``z``'s leading dimensions before ``B``."""
        lead = z.shape[:-1]
        h = self.low_blocks(self.dense(z).reshape(-1, *self.low_shape))
        if extra is not None:
            h = (h.reshape(*lead, *h.shape[1:]) + extra[..., self.half_rows, :]).reshape(h.shape)
        band = self.output(F.elu(self.high_blocks(h))).flatten(1)
        return (band[:, self.positions] + self.bias).reshape(*lead, -1)


class DataDependentInit:
    """Mixin for a :class:`~srvae.models.base.LatentVariableModel` built of weight-normalised layers: its
    ``initialise(x)`` runs the data-dependent initialisation on one forward pass of the training batch ``x``."""

    def initialise(self, x: Tensor) -> None:
        with data_dependent_init(self):
            self.score(x, 1)


class DenseResidualBlock(nn.Module):
    """``h ← h + 0.1 · W₂ act(W₁ act(h))`` at a constant ``width``: the IAF paper's residual block with dense maps.
    ``groups``: ``G`` independent blocks as grouped maps (:class:`~srvae.nets.grouped.GroupedLinear`), ``[G, ..., w]``
    in and out, with :meth:`group` for one of them."""

    def __init__(self, width: int, act: str, groups: int | None = None) -> None:
        super().__init__()
        self.act = activation(act)
        linear: Callable[[], nn.Module] = (lambda: GroupedLinear(groups, width, width)) if groups else \
            (lambda: nn.Linear(width, width))
        self.first, self.second = linear(), linear()

    def forward(self, h: Tensor) -> Tensor:
        return h + RESIDUAL_SCALE * self.second(self.act(self.first(self.act(h))))

    def group(self, g: int, h: Tensor) -> Tensor:
        return h + RESIDUAL_SCALE * self.second.group(g, self.act(self.first.group(g, self.act(h))))


def with_dense_blocks(rest: nn.Sequential, width: int, blocks: int, act: str) -> nn.Sequential:
    """``rest`` (what follows a dense network's first map into ``width`` units: ``act``, then linear maps) with
    ``blocks`` residual blocks in front. Its last module stays ``rest``'s last, so output initialisations that
    reach for it (``ConditionalMLP.init_output``) still find the output layer."""
    return nn.Sequential(*(DenseResidualBlock(width, act) for _ in range(blocks)), *rest)


class ResidualGroupedMLP(GroupedMLP):
    """A :class:`~srvae.nets.grouped.GroupedMLP` with ``blocks`` grouped residual blocks after its first map, at
    ``hidden[0]`` units: the same interface (``forward`` of every group, ``group`` of one)."""

    def __init__(self, groups: int, in_dims: Sequence[int], hidden: Sequence[int], out: int, act: str,
                 blocks: int) -> None:
        super().__init__(groups, in_dims, hidden, out, act)
        self.blocks = nn.ModuleList(DenseResidualBlock(hidden[0], act, groups) for _ in range(blocks))

    def _rest(self, h: Tensor, apply: Callable[[nn.Module, Tensor], Tensor]) -> Tensor:
        for block in self.blocks:
            h = apply(block, h)
        return super()._rest(h, apply)
