"""Inverse autoregressive flow (Kingma et al. 2016) as a conditional bijector.

One IAF step is the numerically stable gated update of the IAF paper (its Algorithm 1 / eqs. 13–14):

    [m, s] = MADE(ε, h),   σ = sigmoid(s),   z = σ ⊙ ε + (1 − σ) ⊙ m,   log|det ∂z/∂ε| = Σ_i log σ_i.

``m_i, s_i`` depend only on ``ε_{<i}`` (in the step's ordering), so the Jacobian is triangular with diagonal σ.
The bias of ``s`` starts at ``gate_bias`` (+2: σ ≈ 0.88), so each step starts close to the identity.

Contract (nflows-style, shared with SeRe-VAE's bijectors): ``forward(eps, context) -> (z, logabsdet)`` is the
cheap direction (one MADE pass, used for sampling the posterior); ``inverse(z, context) -> (eps, logabsdet)``
needs ``D`` sequential MADE passes (after pass ``t`` the first ``t`` dimensions of the ordering are exact).
``context`` is any conditioning vector: the encoder feature ``h`` of an IAF-VAE, or the previous layer's latent
code ``z_{l−1}`` of a self-reflective IAF. Leading batch dimensions (e.g. ``[k, B]``) are allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Bijector
from .made import MADE, ordering_degrees


class IAFStep(Bijector):
    """One gated IAF step with a MADE of the identity ordering, or of the reversed one."""

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        context_features: int | None = None,
        reverse: bool = False,
        act: str = "elu",
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.made = MADE(features, hidden, 2, context_features, ordering_degrees(features, reverse), act)
        with torch.no_grad():  # output rows [D, 2D) are the gate pre-activations s
            self.made.output.bias[features:].fill_(gate_bias)

    def _shift_and_log_gate(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        m, s = self.made(x, context).unbind(-2)
        return m, torch.sigmoid(s), F.logsigmoid(s)

    def _step(self, eps: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``z`` and the gate pre-activations ``s``."""
        m, s = self.made(eps, context).unbind(-2)
        gate = torch.sigmoid(s)
        return gate * eps + (1.0 - gate) * m, s

    def forward(self, eps: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, s = self._step(eps, context)
        return z, F.logsigmoid(s).sum(-1)

    def transform(self, eps: Tensor, context: Tensor | None = None) -> Tensor:
        return self._step(eps, context)[0]

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        eps = torch.zeros_like(z)
        for _ in range(z.shape[-1]):
            m, gate, log_gate = self._shift_and_log_gate(eps, context)
            eps = (z - (1.0 - gate) * m) / gate
        return eps, -log_gate.sum(-1)


class IAF(Bijector):
    """A stack of IAF steps whose orderings alternate (identity, reversed, identity, …), as in the IAF paper."""

    def __init__(
        self,
        features: int,
        steps: int,
        hidden: Sequence[int],
        context_features: int | None = None,
        act: str = "elu",
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.steps = nn.ModuleList(
            IAFStep(features, hidden, context_features, reverse=t % 2 == 1, act=act, gate_bias=gate_bias)
            for t in range(steps)
        )

    def forward(self, eps: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = eps.new_zeros(eps.shape[:-1])
        for step in self.steps:
            eps, step_logabsdet = step(eps, context)
            logabsdet = logabsdet + step_logabsdet
        return eps, logabsdet

    def transform(self, eps: Tensor, context: Tensor | None = None) -> Tensor:
        for step in self.steps:
            eps = step.transform(eps, context)
        return eps

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logabsdet = z.new_zeros(z.shape[:-1])
        for step in reversed(self.steps):
            z, step_logabsdet = step.inverse(z, context)
            logabsdet = logabsdet + step_logabsdet
        return z, logabsdet
