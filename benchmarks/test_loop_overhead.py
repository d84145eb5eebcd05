"""What srvae's own code costs: its training loop and IW-NLL estimator against a minimal hand-written PyTorch
loop for the same mean-field VAE (``config.yaml``'s ``vae``, Burda et al.'s network) and the same batch.

    pytest benchmarks/test_loop_overhead.py --benchmark-only -s      # prints the ratios (also in extra_info)

The minimal loops use the very modules of the srvae model (``model.encoder``, ``model.decoder``) and the same
optimiser as ``srvae.study.run.train.train``; a smoke check (plain ``pytest``) asserts that they compute what srvae
computes. Both sides run alternately in each round, on ``THREADS`` threads, and the ratio is of the medians
(srvae / minimal: 1.00 is no overhead).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srvae.registry import build_model
from srvae.study.config import load_config
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.step import make_optimiser
from srvae.study.run.train import train_epoch

CONFIG = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
THREADS, BATCH, STEPS, ROUNDS = 2, 100, 20, 7
K, K_CHUNK, EVAL_IMAGES = 1000, 250, 100


def minimal_loss(encoder: nn.Module, decoder: nn.Module, xb: Tensor) -> Tensor:
    """The negated mean single-sample ELBO of a Gaussian VAE with a Bernoulli decoder, written out by hand."""
    mean, pre_std = encoder(xb).chunk(2, dim=-1)
    std = F.softplus(pre_std) + 1e-4
    z = mean + std * torch.randn_like(std)
    reconstruction = -F.binary_cross_entropy_with_logits(decoder(z), xb, reduction="none").sum(-1)
    kl = 0.5 * (std.square() + mean.square() - 1.0 - 2.0 * std.log()).sum(-1)
    return -(reconstruction - kl).mean()


def minimal_train_epoch(encoder: nn.Module, decoder: nn.Module, opt: torch.optim.Optimizer, x: Tensor,
                        order: Tensor) -> None:
    """Adam on :func:`minimal_loss`, batch by batch."""
    for idx in order.split(BATCH):
        loss = minimal_loss(encoder, decoder, x[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def minimal_iw_log_likelihood(encoder: nn.Module, decoder: nn.Module, x: Tensor) -> Tensor:
    """``log p̂_K(x)`` per example, K samples drawn in chunks, written out by hand."""
    log_px = []
    for xb in x.split(BATCH):
        mean, pre_std = encoder(xb).chunk(2, dim=-1)
        std = F.softplus(pre_std) + 1e-4
        acc = None
        for start in range(0, K, K_CHUNK):
            n = min(K_CHUNK, K - start)
            eps = torch.randn(n, *mean.shape)
            z = mean + std * eps
            log_likelihood = -F.binary_cross_entropy_with_logits(decoder(z), xb.expand(n, -1, -1),
                                                                 reduction="none").sum(-1)
            log_prior = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
            log_posterior = (-0.5 * (eps.square() + math.log(2 * math.pi)) - std.log()).sum(-1)
            chunk = torch.logsumexp(log_likelihood + log_prior - log_posterior, dim=0)
            acc = chunk if acc is None else torch.logaddexp(acc, chunk)
        log_px.append(acc - math.log(K))
    return torch.cat(log_px)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def vae_and_data(n: int) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((n, 784), 0.13))
    entry = CONFIG.models["vae"]
    return build_model(entry.cls, entry.params, 784, data_mean=x.mean(0)), x


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return make_optimiser(model.parameters(), CONFIG.train_settings("vae"))  # as train() builds it


def compare(benchmark, srvae: Callable[[], object], minimal: Callable[[], object]) -> float | None:
    """Time both alternately over the benchmark's rounds; the ratio of medians (srvae / minimal)."""
    times: dict[str, list[float]] = {"srvae": [], "minimal": []}
    flip = [False]

    def one_round():
        flip[0] = not flip[0]
        for name, fn in sorted({"srvae": srvae, "minimal": minimal}.items(), reverse=flip[0]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    if benchmark.disabled:
        return None
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = medians["srvae"] / medians["minimal"]
    benchmark.extra_info.update({f"{name}_s": m for name, m in medians.items()} | {"ratio": ratio})
    print(f"\n{benchmark.name}: srvae {medians['srvae'] * 1e3:.1f} ms, minimal {medians['minimal'] * 1e3:.1f} ms, "
          f"ratio {ratio:.3f} ({THREADS} threads)")
    return ratio


def test_vae_training_loop_against_a_minimal_loop(benchmark, threads):
    model, x = vae_and_data(STEPS * BATCH)
    twin = copy.deepcopy(model)
    order = torch.arange(len(x))
    settings = CONFIG.train_settings("vae").model_copy(update={"batch_size": BATCH})
    opt, twin_opt = adam(model), adam(twin)

    # the same network, the same objective: one step each from the same weights and noise
    torch.manual_seed(1)
    srvae_objective = -model.elbo_terms(x[:BATCH]).elbo.mean()
    torch.manual_seed(1)
    torch.testing.assert_close(srvae_objective, minimal_loss(twin.encoder, twin.decoder, x[:BATCH]))

    compare(benchmark, lambda: train_epoch(model, opt, x, order, 1.0, settings),
            lambda: minimal_train_epoch(twin.encoder, twin.decoder, twin_opt, x, order))


def test_vae_iw_nll_against_a_minimal_loop(benchmark, threads):
    model, x = vae_and_data(EVAL_IMAGES)
    model.eval()
    torch.manual_seed(2)
    srvae_log_px = iw_log_likelihood(model, x, K, K_CHUNK, BATCH).log_px
    torch.manual_seed(2)
    torch.testing.assert_close(srvae_log_px, minimal_iw_log_likelihood(model.encoder, model.decoder, x))

    compare(benchmark, lambda: iw_log_likelihood(model, x, K, K_CHUNK, BATCH),
            lambda: minimal_iw_log_likelihood(model.encoder, model.decoder, x))
