"""The contract every bijector of the study follows (as in nflows' ``Transform``).

``forward(x, context) -> (y, logabsdet)`` and ``inverse(y, context) -> (x, logabsdet)``, where ``logabsdet``
is ``log|det ∂y/∂x|`` of the direction computed (the inverse's is minus the forward's), one value per
vector: inputs are ``[..., N]``, log-determinants ``[...]``. ``context`` is the conditioning vector (SeRe-VAE:
the previous latent code ``z_{l-1}``; IAF-VAE: an encoder feature), or ``None`` for an unconditional bijector.
Every bijector passes the same contract test (``tests/flows/test_bijector_contract.py``): round trip, and
log-determinant against a dense Jacobian.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class Bijector(nn.Module, ABC):
    """An invertible map of ``[..., N]`` vectors, optionally conditioned on a context."""

    @abstractmethod
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y = f(x; context)`` and ``log|det ∂y/∂x|``."""

    @abstractmethod
    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = f⁻¹(y; context)`` and ``log|det ∂x/∂y|`` (minus the forward's)."""

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = f(x; context)`` alone, for callers that do not need the log-determinant (SeRe-VAE's chain, whose
        Jacobians cancel): a bijector overrides it where skipping the log-determinant saves operations."""
        return self.forward(x, context)[0]


class IdentityBijector(Bijector):
    """``y = x`` (log|det| = 0): the "no transformation" of a DLGM variant without a top-down path."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x, x.new_zeros(x.shape[:-1])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[:-1])

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return x
