"""Shared helpers for the benchmarks: timing, machine peak, peer availability."""

from __future__ import annotations

import importlib.util
import resource
import statistics
import time

import torch


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.5) -> float:
    """Measured dense matmul throughput of this machine (GFLOP/s), best of a few timed bursts."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: list[float]) -> float:
    return statistics.median(values)
