"""Timing shared by every benchmark in ``benchmarks/``: time through the ``throughput`` fixture.

    def test_thing(throughput):
        throughput(lambda: model.sample(100), items=100)

It pins torch to one thread, times CPU benchmarks in process CPU time, calibrates the rounds to a time budget,
groups results by kind (the test function's name, e.g. ``test_training_step`` -> "training step", with the
``device`` parameter when not "cpu"), records items/s in ``extra_info`` and prints an items/s table.
``SRVAE_BENCH_SLOWDOWN=N`` runs the timed function N times per round: a deliberate N× slowdown outside the
library, the regression gate's self-test (``benchmarks/gate.py``, ``tests/test_benchmark_gate.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SLOWDOWN_ENV = "SRVAE_BENCH_SLOWDOWN"
COMPILED = "compiled"  # the marker of torch.compile variants, run only when asked for
BUDGET_S = 2.0  # timed seconds per benchmark: 42 benchmarks take about 2.5 minutes on 2 shared CPU cores
MIN_ROUNDS, MAX_ROUNDS = 5, 1000  # at least 5 rounds for a usable minimum, even for a 3.5 s MAF sampling call
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Process-wide settings, only when timing (plain ``pytest`` runs the whole suite in this process)."""
    if config.getoption("benchmark_disable"):
        return
    # One inter-op thread (settable once, before any parallel work): eager CPU code does not use that pool, but a
    # stray second worker would compete with the timed thread for the cores.
    torch.set_num_interop_threads(1)
    # glibc mmaps every large block (a batch of 5,000 conv feature maps) and unmaps it on free, so each call
    # page-faults fresh zeroed memory: 20-90 ms of kernel time per 200 ms conv DLGM IW-NLL call here, varying with
    # the machine's load. Serving large blocks from a heap that is never trimmed removes it (163-166 ms per call).
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "mallopt"):  # glibc only
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def _device(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("device", "cpu") if callspec else "cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """CPU benchmarks are timed in process CPU time: on a shared machine the wall clock also counts the time the
    scheduler gives other processes, which doubled some results between two unchanged runs here, while CPU time
    counts only the benchmark's own work (one thread, so one core's). CUDA work is not CPU time: wall clock.

    Benchmarks marked ``compiled`` (torch.compile variants: tens of seconds of compiling each, most of a busy
    machine's 19-minute ``--benchmark-only``) run only when a ``-m`` expression names them (``-m compiled``)."""
    for item in items:
        if item.path.is_relative_to(HERE) and "benchmark" in getattr(item, "fixturenames", ()):
            cuda = _device(item) == "cuda"
            item.add_marker(pytest.mark.benchmark(timer=time.perf_counter if cuda else time.process_time))
    if COMPILED not in (config.option.markexpr or ""):
        compiled = [item for item in items if item.get_closest_marker(COMPILED)]
        if compiled:
            config.hook.pytest_deselected(items=compiled)
            items[:] = [item for item in items if not item.get_closest_marker(COMPILED)]


@dataclass(frozen=True)
class Result:
    group: str
    name: str
    items: int
    min_s: float
    median_s: float


_RESULTS: list[Result] = []


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread while timing: with two, every op waits for the slower of two cores, so on a shared
    machine the time tracks the other processes' load rather than the code; one thread also measures the same
    work on machines with different core counts. Restored after each test (plain ``pytest`` runs the rest of
    the suite in the same process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def slowdown() -> int:
    return int(os.environ.get(SLOWDOWN_ENV, "1"))


def _kind(item: pytest.Function, device: str) -> str:
    kind = item.originalname.removeprefix("test_").replace("_", " ")
    return kind if device == "cpu" else f"{kind} ({device})"


@pytest.fixture
def throughput(benchmark, request: pytest.FixtureRequest) -> Callable[..., None]:
    """``throughput(fn, items)`` times ``fn``, which processes ``items`` items per call, on the test's ``device``
    parameter (default "cpu")."""
    device = _device(request.node)

    def run(fn: Callable[[], object], items: int) -> None:
        repeats = slowdown()

        def timed() -> None:
            for _ in range(repeats):
                fn()
            if device == "cuda":
                torch.cuda.synchronize()

        benchmark.group = _kind(request.node, device)
        benchmark.extra_info["items"] = items
        if benchmark.disabled:  # plain pytest: one untimed call, a smoke test
            benchmark.pedantic(timed, rounds=1)
            return
        timed()  # warm-up: first-call allocations, lazy initialisation
        start = time.perf_counter()
        timed()
        rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(BUDGET_S / (time.perf_counter() - start))))
        benchmark.pedantic(timed, rounds=rounds)
        stats = benchmark.stats.stats
        benchmark.extra_info["items_per_s"] = items / stats.min
        _RESULTS.append(Result(benchmark.group, benchmark.name, items, stats.min, stats.median))

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """pytest-benchmark's table has fixed columns (its OPS is calls/s), so items/s get a table of their own."""
    if not _RESULTS:
        return
    terminalreporter.section("throughput (items/s; best round, median round)")
    width = max(len(r.name) for r in _RESULTS)
    for group in sorted({r.group for r in _RESULTS}):
        terminalreporter.write_line(f"{group}:")
        for r in sorted((r for r in _RESULTS if r.group == group), key=lambda r: r.min_s / r.items):
            terminalreporter.write_line(
                f"  {r.name:<{width}} {r.items / r.min_s:>14,.0f} {r.items / r.median_s:>14,.0f}")
