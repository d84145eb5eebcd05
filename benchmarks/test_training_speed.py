"""Training throughput of the paper-size (Table 1) self-reflective models and the DLGM with srvae's own loop,
and with ``train.compile`` (the compiled loss); both with the optimiser ``train`` builds (Adam's fused kernel).

    pytest benchmarks/test_training_speed.py --benchmark-only       # images per CPU-second in extra_info

Threads are pinned to ``THREADS``. Like every benchmark here it is timed in process CPU time
(``benchmarks/conftest.py``: steady between unchanged runs, what the regression gate needs), which counts both
threads: its ``items_per_cpu_s`` is images per CPU-second, about half the wall-clock images/s that
``benchmarks/train_throughput.py`` reports. ``compiled`` runs only when asked (``-m compiled``) and timed only (it
compiles for tens of seconds per model and batch size, too long for the plain-``pytest`` smoke run). ``benchmarks/train_throughput.py --against REV``
compares two revisions side by side.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.train_throughput import MODELS, ROOT, training_epoch

THREADS, STEPS = 2, 10


@pytest.mark.parametrize("mode", ["loop", pytest.param("compiled", marks=pytest.mark.compiled)])
@pytest.mark.parametrize("batch", [100, 256])
@pytest.mark.parametrize("name", MODELS)
def test_training_epoch(benchmark, name, batch, mode):
    if mode == "compiled" and benchmark.disabled:
        pytest.skip("compiles for tens of seconds: timed runs only (--benchmark-only)")
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        epoch = training_epoch(name, batch, STEPS, mode, ROOT)
        benchmark.pedantic(epoch, rounds=5, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)
    if not benchmark.disabled:
        benchmark.extra_info["items_per_cpu_s"] = STEPS * batch / benchmark.stats.stats.median
