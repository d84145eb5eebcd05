"""Why does ``sere_vae_table1``'s seed 2 train badly on ``mnist5k``? (issue 21)

One training run of ``sere_vae_table1`` on ``mnist5k`` (``config.yaml``'s settings, overridable), as
``srvae train`` builds it, but with the run's three random streams chosen separately:

- ``weights``: ``build_run_model``'s ``torch.manual_seed`` (the initial weights; SeRe-VAE has no data-dependent
  initialisation, so ``model.initialise`` changes nothing);
- ``noise``: the global generator's state after building the model of this seed, i.e. the reparameterisation
  noise that run would have drawn (equal to ``weights`` in a normal run);
- ``data``: ``train``'s ``seed`` (the generator of each epoch's binarisation and minibatch order).

Prints one JSON line per run: the per-epoch training / validation ELBO; per epoch the worst batch's loss and the
largest gradient norm an optimiser step saw (after any ``grad_clip``), and the few worst batches; every batch
with a loss above 1e4 explained (:func:`explain`); per module the fraction of weights with a huge Adam second
moment at the end (:func:`adam_scales`); the validation KL per stochastic layer of the current weights at some
epochs (drawn inside ``torch.random.fork_rng``, so that the run's noise is untouched); and for the
best-on-validation weights the test KL per layer and the test IW-NLL with K = 100 (not the study's K = 1000: a
cheaper, looser estimate).

    PYTHONPATH=. python docs/measurements/cpu-2026-12-07-seed2/seed2.py run --seed 2 --epochs 30
    PYTHONPATH=. python docs/measurements/cpu-2026-12-07-seed2/seed2.py run --weights 2 --noise 0 --data 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import srvae.study.run.train as training
from srvae.study.config import load_config
from srvae.study.data.datasets import load_dataset
from srvae.study.run.evaluate import iw_log_likelihood, mean_kl_per_layer
from srvae.study.run.train import build_run_model, train

ROOT = Path(__file__).resolve().parents[3]
MODEL, DATASET, K = "sere_vae_table1", "mnist5k", 100
KL_EPOCHS = {1, 2, 3, 5, 10, 15, 20, 30}


def noise_state(cfg, data, seed: int) -> torch.Tensor:
    """The global generator's state right after ``build_run_model(..., seed)``: that run's noise stream."""
    entry = cfg.models[MODEL]
    build_run_model(entry.cls, entry.params, data, seed)
    return torch.get_rng_state()


def adam_scales(net: torch.nn.Module, optimiser: torch.optim.Optimizer) -> dict[str, float]:
    """Per module (the first two parts of a weight's name), the fraction of weights whose bias-corrected Adam second moment has a root above
    1e3 (typical gradient entries here are below 1): weights whose steps one huge gradient has shrunk to ~0."""
    beta2 = optimiser.param_groups[0]["betas"][1]
    counts: dict[str, list[int]] = {}
    for name, p in net.named_parameters():
        state = optimiser.state[p]
        if "exp_avg_sq" not in state:  # never had a gradient
            continue
        rms = (state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).sqrt()
        count = counts.setdefault(".".join(name.split(".")[:2]), [0, 0])
        count[0] += int((rms > 1e3).sum())
        count[1] += p.numel()
    return {module: round(big / total, 4) for module, (big, total) in counts.items()}


@torch.no_grad()
def explain(net, x: torch.Tensor, rng_state: torch.Tensor) -> dict:
    """The ELBO's terms of a training batch, its noise replayed from ``rng_state`` (the loss draws through
    ``elbo_terms``, i.e. one ``posterior_pass``): per layer, the batch's mean and largest KL and largest |z|."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(rng_state)
        codes, _, _, kl = net.posterior_pass(x, 1)  # codes [L, 1, B, N], kl [1, B, L]
        log_likelihood = net.generator.data.log_likelihood(codes, x)
    return {"reconstruction": round(float(log_likelihood.mean()), 1),
            "kl_mean_per_layer": [round(float(v), 1) for v in kl[0].mean(0)],
            "kl_max_per_layer": [round(float(v), 1) for v in kl[0].max(0).values],
            "max_abs_z_per_layer": [round(float(v), 1) for v in codes.abs().flatten(1).max(1).values]}


def run(weights: int, noise: int, data_seed: int, overrides: dict) -> dict:
    cfg = load_config([ROOT / "config.yaml"])
    entry = cfg.models[MODEL]
    data = load_dataset(DATASET, cfg.datasets[DATASET])
    settings = cfg.train_settings(MODEL).model_copy(update={"checkpoint_every": 10**6, **overrides})
    state = noise_state(cfg, data, noise)
    net = build_run_model(entry.cls, entry.params, data, weights)
    torch.set_rng_state(state)
    kl_valid: dict[int, list[float]] = {}
    batches: list[tuple[float, float]] = []  # (batch loss, gradient norm at the step) of every step, in order
    steps_per_epoch = -(-len(data.train) // settings.batch_size)

    spikes: list[dict] = []

    def traced_loss(model, x, *args):
        state = torch.get_rng_state()
        loss, total = batch_loss(model, x, *args)
        batches.append((float(loss.detach()), float("nan")))
        if batches[-1][0] > 1e4:  # replay the batch's draws and say which term blew up
            spikes.append({"step": len(batches), **explain(model, x, state)})
        return loss, total

    optimisers = []

    def record_norm(optimiser, *_):
        optimisers[:] = [optimiser]
        grads = [p.grad for group in optimiser.param_groups for p in group["params"] if p.grad is not None]
        batches[-1] = (batches[-1][0], float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))

    batch_loss, training.batch_loss = training.batch_loss, traced_loss  # the loop looks it up at every step
    hook = register_optimizer_step_pre_hook(record_norm)

    def after_epoch(epoch: int, best: dict) -> None:
        if epoch in KL_EPOCHS:
            with torch.random.fork_rng(devices=[]):
                kl_valid[epoch] = mean_kl_per_layer(net, data.valid)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = train(net, data, settings, data_seed, Path(scratch) / "ckpt", name=f"w{weights}n{noise}d{data_seed}",
                       log=lambda m: None, after_epoch=after_epoch)
    seconds = time.perf_counter() - t0
    hook.remove()
    adam = adam_scales(net, optimisers[0])
    training.batch_loss = batch_loss
    per_epoch = [batches[i:i + steps_per_epoch] for i in range(0, len(batches), steps_per_epoch)]
    worst = sorted(range(len(batches)), key=lambda i: -batches[i][0])[:5]
    net.eval()  # the best-on-validation weights, evaluated as ``srvae evaluate`` does (seeded with the run's seed)
    torch.manual_seed(weights)
    ev = cfg.evaluate_settings(MODEL)
    estimate = iw_log_likelihood(net, data.test, K, ev.k_chunk, ev.batch_size)
    return {
        "weights": weights, "noise": noise, "data": data_seed, "overrides": overrides,
        "epochs": settings.epochs, "lr": settings.lr, "kl_warmup_epochs": settings.kl_warmup_epochs,
        "grad_clip": settings.grad_clip,
        "best_epoch": result["best_epoch"], "train_seconds": round(seconds, 1),
        "test_nll_k100": round(estimate.nll, 3), "test_elbo": round(float(estimate.elbo.mean()), 3),
        "test_kl_per_layer": [round(v, 3) for v in mean_kl_per_layer(net, data.test)],
        "train_elbo": [round(m["train_elbo"], 2) for m in result["metrics"]],
        "valid_elbo": [round(m["valid_elbo"], 2) for m in result["metrics"]],
        "max_batch_loss": [round(max(b[0] for b in e), 1) for e in per_epoch],
        "max_grad_norm": [round(max(b[1] for b in e), 1) for e in per_epoch],
        "worst_batches": [{"epoch": i // steps_per_epoch + 1, "batch": i % steps_per_epoch + 1,
                           "loss": round(batches[i][0], 1), "grad_norm": round(batches[i][1], 1),
                           "next_losses": [round(b[0], 1) for b in batches[i + 1:i + 4]]} for i in worst],
        "adam_rms_over_1e3": adam,
        "spikes": spikes,
        "valid_kl_per_layer": {e: [round(v, 3) for v in kl] for e, kl in sorted(kl_valid.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--seed", type=int, help="all three streams from this seed (a normal run)")
    parser.add_argument("--weights", type=int)
    parser.add_argument("--noise", type=int)
    parser.add_argument("--data", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--kl-warmup", type=int)
    parser.add_argument("--grad-clip", type=float)
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights, noise, data_seed = (args.seed if v is None else v for v in (args.weights, args.noise, args.data))
    overrides = {key: value for key, value in [("epochs", args.epochs), ("lr", args.lr),
                                                ("kl_warmup_epochs", args.kl_warmup),
                                                ("grad_clip", args.grad_clip)] if value is not None}
    print(json.dumps(run(weights, noise, data_seed, overrides)), flush=True)


if __name__ == "__main__":
    main()
