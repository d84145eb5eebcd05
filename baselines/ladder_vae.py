"""Ladder VAE (Sønderby et al. 2016), MLP version of SeRe-VAE's Table 1.

Generative model, top-down over ``L`` stochastic layers (``z_1`` next to the data, ``z_L`` on top):
``p(z_L) = N(0, I)``, ``p(z_l | z_{l+1}) = N(μ_p, σ_p²)`` from a top-down block of ``z_{l+1}``,
``p(x | z_1) = Bernoulli``. Inference: a deterministic bottom-up pass ``d_l = up_l(d_{l−1})``, ``d_0 = x``, gives
a "likelihood" Gaussian ``N(μ̂_l, σ̂_l²)`` per layer; the posterior is built top-down with the *same* top-down
blocks as the generative model,

    q(z_L | x) = N(μ̂_L, σ̂_L²),     q(z_l | z_{l+1}, x) = N(μ̂_l, σ̂_l²) · N(μ_p, σ_p²) / normaliser

(the precision-weighted merge, :func:`srvae.nets.gaussian.precision_weighted_merge`; paper eqs. 17–19). Given the
sampled ``z_{l+1}`` both ``q(z_l|·)`` and ``p(z_l|z_{l+1})`` are Gaussian, so the per-layer KL is closed-form.

``share_top_down``: the paper's equations reuse the generative top-down blocks in the merge (``True``, this
project's CPU study); the authors' reference code (github.com/casperkaae/LVAE) gives the inference path top-down
blocks of its own by default (``False``, the paper configs): ``N(μ_p, σ_p²)`` in the merge then comes from
separate blocks of the same shape, and ``p(z_l | z_{l+1})`` keeps the generative ones (``docs/decisions.md``).

Paper setting: 5 layers of 64-32-16-8-4 latents; between consecutive stochastic layers two deterministic
layers of 512-256-128-64-32 units (linear → batch norm → leaky ReLU), mirrored in the top-down path (the
block below ``z_l`` has width ``hidden[l]``). Reported: −81.84 nats (−81.74 with 10 IW samples).

Batch normalisation: in ``train()`` mode it uses batch statistics, in ``eval()`` mode the running averages, so
an example's evaluation does not depend on the rest of its batch (call ``model.eval()`` before evaluating).
:meth:`LadderVAE.refresh_statistics` re-estimates them over a whole data set, as Sønderby et al.
do before testing; :meth:`LadderVAE.sample` always uses the running statistics.

The importance-weighted Ladder VAE (Table 1, "10 IW samples") is this model trained on the IWAE bound
``logsumexp_k log w_k − log k`` of :meth:`log_importance_weights` with ``k = 10`` (with KL warm-up, scale
``log p(z) − log q(z|x)`` inside each weight by β); no other model-side change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob, reparameterise
from srvae.models import LatentVariableModel, Scores, training_mode
from srvae.nets.gaussian import GaussianHead, precision_weighted_merge
from srvae.nets.mlp import Activation, PositiveInt, Widths, activation, init_output_bias


@dataclass(frozen=True)
class LadderVAEConfig:
    latents: Widths = (64, 32, 16, 8, 4)  # z_1 (bottom) … z_L (top)
    hidden: Widths = (512, 256, 128, 64, 32)  # width of the deterministic block below each z_l
    layers_per_block: PositiveInt = 2
    activation: Activation = "leaky_relu"
    batch_norm: bool = True
    #: the posterior's merge reuses the generative top-down blocks (paper eqs. 17–19); False: the inference path has
    #: top-down blocks of its own (the reference code's default)
    share_top_down: bool = True

    def __post_init__(self) -> None:
        if len(self.latents) != len(self.hidden) or not self.latents:
            raise ValueError(f"latents {self.latents} and hidden {self.hidden} must have one entry per layer")


class BatchNorm(nn.BatchNorm1d):
    """Batch normalisation over every leading dimension (``[k, B, C]`` inputs are normalised over k·B rows)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def block(in_dim: int, width: int, layers: int, act: str, batch_norm: bool) -> nn.Sequential:
    """``layers`` × (linear → batch norm → activation), all ``width`` units wide."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [nn.Linear(in_dim if i == 0 else width, width)]
        modules += [BatchNorm(width)] if batch_norm else []
        modules += [activation(act)]
    return nn.Sequential(*modules)


class LadderVAE(LatentVariableModel):
    """Ladder VAE with Bernoulli output; index ``l = 0`` is the bottom stochastic layer ``z_1``."""

    Config = LadderVAEConfig

    def __init__(self, cfg: LadderVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        n, act, bn = cfg.layers_per_block, cfg.activation, cfg.batch_norm
        widths_below = (data_dim, *cfg.hidden[:-1])
        self.up = nn.ModuleList(block(i, w, n, act, bn) for i, w in zip(widths_below, cfg.hidden))
        self.up_heads = nn.ModuleList(GaussianHead(w, z) for w, z in zip(cfg.hidden, cfg.latents))
        # top-down block l maps z_{l+1} to p(z_l | z_{l+1}); its width is that of the block below z_{l+1}
        self.down = nn.ModuleList(block(z, w, n, act, bn) for z, w in zip(cfg.latents[1:], cfg.hidden[1:]))
        self.down_heads = nn.ModuleList(GaussianHead(w, z) for w, z in zip(cfg.hidden[1:], cfg.latents[:-1]))
        if not cfg.share_top_down:  # the inference path's own top-down blocks, of the same shapes
            self.inference_down = nn.ModuleList(block(z, w, n, act, bn) for z, w in zip(cfg.latents[1:], cfg.hidden[1:]))
            self.inference_down_heads = nn.ModuleList(GaussianHead(w, z)
                                                      for w, z in zip(cfg.hidden[1:], cfg.latents[:-1]))
        self.decoder = nn.Sequential(
            block(cfg.latents[0], cfg.hidden[0], n, act, bn), nn.Linear(cfg.hidden[0], data_dim)
        )
        init_output_bias(self.decoder[-1], data_mean)

    @property
    def latents_per_layer(self) -> list[int]:
        return list(self.cfg.latents)  # z_1 (bottom) … z_L: 64-32-16-8-4 in the paper

    def prior(self, l: int, z_above: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of p(z_l | z_{l+1}) for a layer ``l`` below the top."""
        return self.down_heads[l](self.down[l](z_above))

    def top_down_term(self, l: int, z_above: Tensor, prior: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The top-down Gaussian that the posterior of layer ``l`` merges with its bottom-up term: the prior
        ``p(z_l | z_{l+1})`` itself when shared, else the inference path's own blocks of ``z_{l+1}``."""
        if self.cfg.share_top_down:
            return prior
        return self.inference_down_heads[l](self.inference_down[l](z_above))

    def score(self, x: Tensor, k: int) -> Scores:
        likelihood_terms = []  # bottom-up N(μ̂_l, σ̂_l²), each [B, Z_l], computed once for all k samples
        d = x
        for up, head in zip(self.up, self.up_heads):
            d = up(d)
            likelihood_terms.append(head(d))

        mean_q, std_q = (t.expand(k, -1, -1) for t in likelihood_terms[-1])
        mean_p, std_p = torch.zeros_like(mean_q), torch.ones_like(std_q)
        log_prior, log_posterior, kl = [], [], []
        for l in reversed(range(len(self.cfg.latents))):
            if l < len(self.cfg.latents) - 1:
                mean_p, std_p = self.prior(l, z)  # noqa: F821 -- z: the layer above's code, drawn last iteration
                top_down = self.top_down_term(l, z, (mean_p, std_p))  # noqa: F821 -- z as above
                mean_q, std_q = precision_weighted_merge(*likelihood_terms[l], *top_down)
            z = reparameterise(mean_q, std_q)
            log_prior.append(gaussian_log_prob(z, mean_p, std_p))
            log_posterior.append(gaussian_log_prob(z, mean_q, std_q))
            kl.append(gaussian_kl(mean_q, std_q, mean_p, std_p))
        return Scores(
            log_likelihood=bernoulli_log_prob(x.expand(k, -1, -1), self.decoder(z)),
            log_prior=sum(log_prior),
            log_posterior=sum(log_posterior),
            kl=torch.stack(kl[::-1], dim=-1),  # [k, B, L], bottom layer first
        )

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        with training_mode(self, False):  # batch statistics of generated samples would couple the samples
            z = torch.randn(n, self.cfg.latents[-1], device=self.device)
            for l in reversed(range(len(self.cfg.latents) - 1)):
                z = reparameterise(*self.prior(l, z))
            return torch.bernoulli(torch.sigmoid(self.decoder(z)))

    @torch.no_grad()
    def refresh_statistics(self, batches: Iterable[Tensor]) -> None:
        """Set every batch-norm layer's running mean and variance to its average over ``batches`` [B, D].

        Sønderby et al. re-collect these statistics over the whole training set before testing, instead of
        using the exponential moving averages of training.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm1d)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches seen
        with training_mode(self, True):
            for x in batches:
                self.score(x, 1)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
