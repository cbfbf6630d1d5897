"""Shared helpers for the benchmarks: timing, machine peak, peer availability."""

from __future__ import annotations

import importlib.util
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

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


def alternate(blocks: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every timed block in turn, ``rounds`` times, so machine drift hits each alike; name → results."""
    results: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            results[name].append(block())
    return results


def emit(result: dict, out: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def median(values: list[float]) -> float:
    return statistics.median(values)


def lightly_simclr_model() -> torch.nn.Module:
    """lightly's documented SimCLR model: torchvision ResNet-18 without its classifier + SimCLRProjectionHead."""
    import torchvision
    from lightly.models.modules import SimCLRProjectionHead
    from torch import nn

    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = SimCLRProjectionHead(512, 2048, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    return SimCLR()
