"""The one model interface that SeRe-VAE and every baseline implement.

Training (single-sample ELBO), importance-weighted NLL, sampling speed and reporting are written once
against :class:`LatentVariableModel`. A model implements two methods:

- :meth:`LatentVariableModel.score` — draw ``k`` latent samples per example from the variational posterior
  and return the per-sample terms of the log importance weight
  ``log w = log p(x | z) + log p(z) − log q(z | x)`` (shape ``[k, B]`` each), plus, where it has one, the
  closed-form KL per stochastic layer (shape ``[k, B, L]``);
- :meth:`LatentVariableModel.sample` — ancestral samples ``x ~ p(x)``.

Everything else (ELBO terms, log importance weights, parameter count) follows from these here, so the
ELBO that trains a model and the weights that evaluate it can never drift apart.

A flow with an exact likelihood fits the same contract: ``log_likelihood`` is ``log p(x)`` itself and the
prior and posterior terms are zero, so every importance weight equals ``p(x)``; it says so with
``exact = True``. ``data_kind`` says which data a model is built for — binary vectors (binarised images) or
continuous ones (dequantised images in logit space) — so that the study pairs each model only with datasets
of its kind.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclass
class Scores:
    """Per-sample terms of the log importance weight, each ``[k, B]`` (``kl``: ``[k, B, L]`` or None).

    ``log_prior`` and ``log_posterior`` may be computed in any space in which they share the same
    Jacobian (SeRe-VAE uses its base latents ε); only their difference enters the weight.
    """

    log_likelihood: Tensor
    log_prior: Tensor
    log_posterior: Tensor
    kl: Tensor | None = None

    @property
    def log_weights(self) -> Tensor:
        return self.log_likelihood + self.log_prior - self.log_posterior


@dataclass
class ElboTerms:
    """Single-sample ELBO terms per example: ``elbo = reconstruction − kl``.

    ``kl`` is the closed form where the model has one, else the one-sample estimate
    ``log q(z|x) − log p(z)``; ``kl_per_layer`` is ``[B, L]`` (``L = 1`` for one stochastic layer).
    """

    reconstruction: Tensor
    kl: Tensor
    kl_per_layer: Tensor

    @property
    def elbo(self) -> Tensor:
        return self.reconstruction - self.kl


#: the data a model is built for: binarised images, or dequantised images in logit space
DataKind = Literal["binary", "continuous"]


class LatentVariableModel(nn.Module, ABC):
    """A latent-variable model of vectors ``x`` (binary ``{0,1}^D`` or real ``R^D``) with an amortised posterior.

    Every model is built as ``Model(cfg, data_dim, data_mean=None)``: ``cfg`` is an instance of its
    ``Config`` (a frozen dataclass of hyper-parameters), ``data_mean`` the training set's pixel means,
    which a decoder may use to start at the data's marginal.
    """

    #: the model's typed configuration class (a frozen dataclass); set by each model
    Config: type
    #: the data the model is built for
    data_kind: ClassVar[DataKind] = "binary"
    #: whether ``score`` gives the exact ``log p(x)`` (zero prior and posterior terms): any K gives the same estimate
    exact: ClassVar[bool] = False

    def __init__(self, cfg: Any, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.data_dim = data_dim

    @abstractmethod
    def score(self, x: Tensor, k: int) -> Scores:
        """Draw ``k`` posterior samples per example of ``x`` ``[B, D]`` and score them (see :class:`Scores`)."""

    @abstractmethod
    def sample(self, n: int) -> Tensor:
        """``n`` ancestral samples ``x ~ p(x)`` as a ``[n, D]`` tensor in the data's space (zeros and ones for
        binary data)."""

    def initialise(self, x: Tensor) -> None:
        """Data-dependent initialisation on the training batch ``x``, before the first update.

        Called once by the training loop when a run starts (never when it resumes from a checkpoint). Models
        with weight normalisation (the convolutional models) override it; others have none.
        """

    def refresh_statistics(self, batches: Iterable[Tensor]) -> None:
        """Re-estimate data-dependent statistics over the training set before evaluation.

        Called once after training. Models with batch normalisation (Ladder VAE, MAF) override it; others have none.
        """

    def elbo_terms(self, x: Tensor) -> ElboTerms:
        """The single-sample ELBO of each example of ``x``."""
        s = self.score(x, 1)
        if s.kl is not None:
            kl_per_layer = s.kl[0]
        else:
            kl_per_layer = (s.log_posterior - s.log_prior)[0].unsqueeze(-1)
        return ElboTerms(s.log_likelihood[0], kl_per_layer.sum(-1), kl_per_layer)

    def log_importance_weights(self, x: Tensor, k: int) -> Tensor:
        """``log w_k = log p(x, z_k) − log q(z_k | x)`` for ``k`` posterior samples per example: ``[k, B]``."""
        return self.score(x, k).log_weights

    @property
    def latents_per_layer(self) -> list[int] | None:
        """Latent units of each stochastic layer, in the order of ``kl_per_layer``, where the layers differ in width
        (the report then also shows the KL per latent unit); None where they do not."""
        return None

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


@contextlib.contextmanager
def training_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``module`` in train (``True``) or eval (``False``) mode for the block, then restore its mode."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)
