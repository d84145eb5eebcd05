"""Wall-clock sampling speed: the time to draw N samples from p(x), after a warm-up, median of repeats, with
the spread of the repeats (their interquartile range over the median) so that a noisy measurement shows as one.

The paper claims SeRe-VAE needs "a fraction of the computational cost in both training and inference"
but reports no timing; this is new evidence, measured the same way for every model. On CUDA, kernels are
asynchronous: the clock stops only after ``torch.cuda.synchronize()``.

Nothing makes the timing run alone on its machine (a workflow may run other jobs beside it), so the result records
how busy the machine was: the 1-minute load average right after the timed repeats (``load_1min``; ``None`` where
the system has none) and the number of CPUs, for the report to print and to mark a timing taken on a busy machine.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from srvae.infra.devices import device_name
from srvae.models import LatentVariableModel


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): before a clock stops."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def sampling_speed(model: LatentVariableModel, n_samples: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Median wall-clock seconds to draw ``n_samples`` samples, samples per second, and the relative spread."""
    model.eval()
    device = model.device
    for _ in range(warmup):
        model.sample(n_samples)
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.sample(n_samples)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # covers the repeats (under a minute)
    median = statistics.median(times)
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [median] * 3
    return {
        "samples_per_s": n_samples / median,
        "seconds_median": median,
        "relative_spread": (quartiles[2] - quartiles[0]) / median,
        "n_samples": n_samples,
        "repeats": repeats,
        "device": device.type,
        "device_name": device_name(device),
        "load_1min": load,
        "cpus": os.cpu_count(),
    }
