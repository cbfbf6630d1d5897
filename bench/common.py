"""Shared helpers for the benchmarks: timing, machine peak, peer availability."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
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


def strict_json(value):
    """``value`` with NaN/inf (no episode finished within a quick budget) as null: JSON that strict parsers read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def emit(result: dict, out: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``out`` when given."""
    text = json.dumps(strict_json(result), indent=2, allow_nan=False)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def median(values: list[float]) -> float:
    return statistics.median(values)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of per-seed results."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(values: list[float], digits: int = 1) -> dict:
    """{"mean", "std", "values"} of per-seed results, rounded to ``digits``."""
    mean, std = mean_std(values)
    return {"mean": round(mean, digits), "std": round(std, digits), "values": [round(v, digits) for v in values]}


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def machine() -> dict:
    """CPU model, core count, the flags that decide the fast kernels (bf16, AMX), 1-min load average, torch version."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags],
            "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__}


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def resnet18_simclr_model(head: torch.nn.Module | None = None) -> torch.nn.Module:
    """torchvision ResNet-18 without its classifier + a projection head (default: the layer shapes of lightly's
    ``SimCLRProjectionHead(512, 2048, 128)`` in plain torch, so the bare-model reference needs no lightly)."""
    import torchvision
    from torch import nn

    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = head if head is not None else nn.Sequential(
                nn.Linear(512, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True), nn.Linear(2048, 128))

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    return SimCLR()


def lightly_simclr_model() -> torch.nn.Module:
    """lightly's documented SimCLR model: torchvision ResNet-18 without its classifier + SimCLRProjectionHead."""
    from lightly.models.modules import SimCLRProjectionHead

    return resnet18_simclr_model(SimCLRProjectionHead(512, 2048, 128))
