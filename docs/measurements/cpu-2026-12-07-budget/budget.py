"""Does training budget close the reversed claims of Tables 2 and 3? (issue 21)

Trains each job (model entry, seed) of ``budget.yaml`` once, to the largest budget it is asked for, and reads
the shorter budgets off that run: ``train``'s ``after_epoch`` hands over the best-on-validation weights so far,
which are exactly what a run of that many epochs returns (the schedules depend on the epoch, not on the epoch
count). Each snapshot is evaluated as ``srvae evaluate`` does (training-set statistics refreshed with the
run's seed, ``torch.manual_seed(seed)``, K from the config) inside ``torch.random.fork_rng``, so that the
training run's own noise goes on untouched, and its per-image ``log p̂_K(x)`` is written to
``runs/<model>/seed<s>/epochs<E>.npz`` atomically. A rerun skips the snapshots already written.

Several workers share the job list, each claiming a job by creating ``claims/<job>`` (run two for two cores):

    PYTHONPATH=. python docs/measurements/cpu-2026-12-07-budget/budget.py train &
    PYTHONPATH=. python docs/measurements/cpu-2026-12-07-budget/budget.py train &
    PYTHONPATH=. python docs/measurements/cpu-2026-12-07-budget/budget.py analyse   # gaps.csv, gaps.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from srvae.infra.atomic_io import write_text
from srvae.registry import build_model
from srvae.study.config import load_config
from srvae.study.data.datasets import load_dataset
from srvae.study.report.compare import paired_difference
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.train import TrainingDivergedError, build_run_model, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


# (models, budgets as multiples of each model's default epochs), in the order the workers take them: the
# reversed claims, in the default and the paper's build, to the longest budget; then the references
PLAN = [
    (["conv_sere_vae", "conv_vae", "sere_maf", "maf10", "conv_sere_vae_dense", "sere_maf_precision"], [1, 3, 10]),
    (["conv_dlgm", "maf5", "sere_vae", "dlgm"], [1, 3]),
    (["maf10_slow"], [1, 3, 10]),  # added once MAF(10) at lr 1e-3 peaked at epoch 4: the MAF protocol's lr
]


def study():
    return load_config([ROOT / "config.yaml", HERE / "budget.yaml"])


def snapshot_path(model: str, seed: int, epochs: int) -> Path:
    return HERE / "runs" / model / f"seed{seed}" / f"epochs{epochs}.npz"


def evaluate_snapshot(cfg, model: str, seed: int, data, state: dict, best_epoch: int, epochs: int,
                      train_seconds: float, diverged_at: int = 0) -> None:
    """``srvae train``'s post-processing and ``srvae evaluate`` on the weights ``state``, RNG untouched."""
    entry = cfg.models[model]
    settings, ev = cfg.train_settings(model), cfg.evaluate_settings(model)
    with torch.random.fork_rng(devices=[]):
        net = build_model(entry.cls, entry.params, data.data_dim, data.train.mean(0))
        net.load_state_dict(state)
        statistics = torch.Generator().manual_seed(seed)
        net.refresh_statistics(data.training_images(statistics).split(settings.eval_batch_size))
        net.eval()
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        estimate = iw_log_likelihood(net, data.test, 1 if net.exact else ev.k, ev.k_chunk, ev.batch_size)
        eval_seconds = time.perf_counter() - t0
    out = snapshot_path(model, seed, epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, log_px=estimate.log_px.double().numpy(), elbo=estimate.elbo.double().numpy(),
             best_epoch=best_epoch, train_seconds=train_seconds, eval_seconds=eval_seconds,
             k=1 if net.exact else ev.k, diverged_at=diverged_at)
    os.replace(tmp, out)
    print(f"{model} seed {seed} at {epochs} epochs: NLL {estimate.nll:.2f} (best epoch {best_epoch}, "
          f"eval {eval_seconds:.0f} s{f', diverged at epoch {diverged_at}' if diverged_at else ''})", flush=True)


def run_job(cfg, model: str, seed: int, budgets: list[int]) -> None:
    entry = cfg.models[model]
    dataset = next(d for d in cfg.study.datasets if cfg.runs_on(model, d))
    data = load_dataset(dataset, cfg.datasets[dataset])
    settings = cfg.train_settings(model).model_copy(update={"epochs": max(budgets), "checkpoint_every": 10**6})
    net = build_run_model(entry.cls, entry.params, data, seed)
    t0 = time.perf_counter()
    last = {"epoch": 0, "best": None}

    def after_epoch(epoch: int, best: dict) -> None:
        last.update(epoch=epoch, best=best)
        if epoch in budgets and not snapshot_path(model, seed, epoch).exists():
            evaluate_snapshot(cfg, model, seed, data, best["state"], best["epoch"], epoch, time.perf_counter() - t0)

    scratch = HERE / "claims" / f"{model}-seed{seed}.ckpt"
    try:
        train(net, data, settings, seed, scratch, name=f"{model}/seed{seed}", log=lambda m: None,
              after_epoch=after_epoch)
    except TrainingDivergedError as error:
        # a study run of a longer budget stops here with this error; record for it the best weights before the
        # divergence (what early stopping keeps), flagged with the epoch that diverged
        print(f"{model} seed {seed}: {error}", flush=True)
        for epochs in budgets:
            if epochs > last["epoch"] and not snapshot_path(model, seed, epochs).exists():
                evaluate_snapshot(cfg, model, seed, data, last["best"]["state"], last["best"]["epoch"], epochs,
                                  time.perf_counter() - t0, diverged_at=last["epoch"] + 1)
    scratch.unlink(missing_ok=True)


def jobs(cfg) -> list[tuple[str, int, list[int]]]:
    """(model, seed, budgets in epochs) in the plan's order, seed by seed within a group."""
    return [(model, seed, [cfg.train_settings(model).epochs * m for m in multiples])
            for models, multiples in PLAN for seed in cfg.seeds for model in models]


def train_all() -> None:
    torch.set_num_threads(1)
    cfg = study()
    (HERE / "claims").mkdir(exist_ok=True)
    for model, seed, budgets in jobs(cfg):
        if all(snapshot_path(model, seed, e).exists() for e in budgets):
            continue
        try:  # claim the job: the first worker to create the file takes it
            os.close(os.open(HERE / "claims" / f"{model}-seed{seed}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        print(f"{model} seed {seed}: training to {max(budgets)} epochs", flush=True)
        run_job(cfg, model, seed, budgets)


CLAIMS = [  # (claim, build, A, B): the paired gap A − B in NLL (lower is better, negative favours A)
    ("Table 2", "default build", "conv_sere_vae", "conv_vae"),
    ("Table 2", "paper build (dense_blocks: 1)", "conv_sere_vae_dense", "conv_vae"),
    ("Table 2 (reference)", "default build", "conv_sere_vae", "conv_dlgm"),
    ("Table 3", "default build (covariance base)", "sere_maf", "maf10"),
    ("Table 3", "paper build (precision base)", "sere_maf_precision", "maf10"),
    ("Table 3", "default build, MAF(10) at the MAF protocol's lr 1e-4", "sere_maf", "maf10_slow"),
    ("Table 3", "paper build, MAF(10) at the MAF protocol's lr 1e-4", "sere_maf_precision", "maf10_slow"),
    ("Table 3 (reference)", "default build (covariance base)", "sere_maf", "maf5"),
    ("Table 1 (reference)", "default build", "sere_vae", "dlgm"),
]


def analyse() -> None:
    cfg = study()
    rows, nll_rows = [], []
    for path in sorted((HERE / "runs").glob("*/seed*/epochs*.npz")):
        z = np.load(path)
        model, seed, epochs = path.parts[-3], int(path.parts[-2][4:]), int(path.stem[6:])
        nll_rows.append({"model": model, "seed": seed, "epochs": epochs, "nll": -z["log_px"].mean(),
                         "best_epoch": int(z["best_epoch"]), "diverged_at": int(z["diverged_at"]),
                         "train_seconds": float(z["train_seconds"])})
    nll = pd.DataFrame(nll_rows)
    write_text(HERE / "nll.csv", nll.round(4).to_csv(index=False))
    for claim, build, a, b in CLAIMS:
        for epochs_a in sorted(nll.loc[nll.model == a, "epochs"].unique()):
            multiple = epochs_a // cfg.train_settings(a).epochs
            epochs_b = cfg.train_settings(b).epochs * multiple
            arrays = []
            for model, epochs in ((a, epochs_a), (b, epochs_b)):
                files = [snapshot_path(model, s, epochs) for s in cfg.seeds]
                if not all(f.exists() for f in files):
                    break
                arrays.append(np.stack([-np.load(f)["log_px"] for f in files]))
            if len(arrays) < 2:
                continue
            gap = paired_difference(arrays[0], arrays[1])
            rows.append({"claim": claim, "build": build, "a": a, "b": b, "multiple": multiple,
                         "epochs_a": epochs_a, "epochs_b": epochs_b, "nll_a": arrays[0].mean(),
                         "nll_b": arrays[1].mean(), "gap": gap.mean, "se": gap.se, "dof": gap.dof,
                         "p": gap.p_value})
    gaps = pd.DataFrame(rows)
    write_text(HERE / "gaps.csv", gaps.round(4).to_csv(index=False))
    print(gaps.round(3).to_string(index=False))
    plot(gaps)


def plot(gaps: pd.DataFrame) -> None:
    """One panel per paper table, the gap against the budget (multiples of the default epochs), ± SE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = ["Table 2", "Table 3", "Table 1"]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 5.2))
    for ax, table in zip(axes, panels):
        part = gaps[gaps.claim.str.startswith(table)]
        for (claim, build, a, b), line in part.groupby(["claim", "build", "a", "b"], sort=False):
            ax.errorbar(line["multiple"], line["gap"], yerr=line["se"], marker="o", capsize=3,
                        linestyle="--" if "reference" in claim else "-",
                        label=f"{a} − {b}: {build}" + (" (reference)" if "reference" in claim else ""))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([1, 3, 10], ["1×", "3×", "10×"])
        ax.minorticks_off()
        ax.set_title(f"{table} (default epochs: {int(part['epochs_a'].min())})", fontsize=10)
        ax.set_xlabel("training budget (× the default study's epochs)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    axes[0].set_ylabel("paired test NLL gap A − B, nats (± SE)\nnegative: the self-reflective model A is better")
    fig.tight_layout()
    fig.savefig(HERE / "gaps.png", dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "analyse"])
    args = parser.parse_args()
    try:
        train_all() if args.step == "train" else analyse()
    except KeyboardInterrupt:
        sys.exit("interrupted: run again to resume (finished snapshots are kept)")
