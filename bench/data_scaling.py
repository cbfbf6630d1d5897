"""Memory and speed of lazy file datasets as the number of files grows: peak RSS must stay flat.

Generates image folders of 1k, 4k and 16k JPEGs at 256×256 (10 class folders, smooth random images)
and audio folders of 1k and 4k two-second 16 kHz clips, then for each one pretrains a few SimCLR steps
with ``data.cache=none`` — files listed in an index and decoded per batch in ``data.num_workers``
DataLoader workers — at ``data.size=224`` (audio: 16 kHz, 2 s). Each size runs in its own process, so
its peak memory is its own: the main process's peak RSS (``ru_maxrss``) and the peak of the main
process's RSS plus its DataLoader workers' private memory (USS), sampled every 50 ms from /proc. Goal: peak memory grows by no more than the index, ≤ 1.2× from the smallest to the
largest folder.

    python bench/data_scaling.py                     # full run: ~21k JPEGs + 5k clips in a temp folder
    python bench/data_scaling.py --tiny              # seconds; what the test suite runs (50/100 files, 32×32)
    python bench/data_scaling.py --data /big/disk    # keep the generated folders there (reused when present)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def make_images(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` JPEGs of ``side``×``side`` in 10 class folders: upsampled 8×8 random colour fields (JPEG-friendly)."""
    from PIL import Image

    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = folder / f"class_{i % CLASSES}"
        cls.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((side, side), Image.BICUBIC).save(cls / f"{i:06d}.jpg", quality=90)
    done.touch()
    return folder


def make_clips(folder: Path, n: int, sample_rate: int, seconds: float, seed: int = 0) -> Path:
    """``n`` WAV clips named ``{label}_{speaker}_{i}.wav``: a tone per class with noise, ``seconds`` long."""
    import soundfile as sf

    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    for i in range(n):
        label = i % CLASSES
        wave = 0.3 * np.sin(2 * np.pi * (200 + 60 * label) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"{label}_s{i % 7}_{i:06d}.wav", wave.astype(np.float32), sample_rate)
    done.touch()
    return folder


def _memory_mb(pid: int, fields: tuple[str, ...]) -> float:
    """Sum of ``fields`` of /proc/<pid>/smaps_rollup (MB); 0 when the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0.0
    return sum(int(line.split()[1]) for line in lines if line.split(":")[0] in fields) / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class TreeMemory:
    """Every ``interval`` s: RSS of this process + private memory (USS) of its children (the DataLoader workers).

    Workers are forked, so their shared pages are the main process's and counted once there; their own
    allocations (decoded images, batches in flight) are private. Keeps the peak.
    """

    def __init__(self, interval: float = 0.05):
        import os
        import threading

        self.pid, self.interval, self.peak_mb, self.peak_workers = os.getpid(), interval, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = _children(self.pid)
            total = _memory_mb(self.pid, ("Rss",)) + sum(_memory_mb(k, ("Private_Clean", "Private_Dirty")) for k in kids)
            if total > self.peak_mb:
                self.peak_mb, self.peak_workers = total, len(kids)
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def child(args) -> dict:
    """One pretraining run in this process; returns its figures (called with --child)."""
    import torch

    from mmssl.config import compose
    from mmssl.logging import RunLogger
    from mmssl.train.trainer import Trainer

    common = [f"run_dir={args.run_dir}", "logger.mode=disabled", f"trainer.steps={args.steps}", "trainer.warmup_steps=1",
              f"trainer.log_every={args.steps}", "trainer.checkpoint_every=0", "trainer.progress=false",
              "eval.plot=false", "eval.baselines=false", "device=cpu", f"data.batch_size={args.batch}",
              "data.cache=none", f"data.num_workers={args.workers}", f"data.root={args.root}"]
    if args.modality == "image":
        overrides = ["data=image_folder", f"data.size={args.size}", "encoder.image.in_channels=3",
                     "encoder.image.width=8", "objective.simclr.projection_dim=32", "objective.simclr.hidden_dim=64"]
    else:
        overrides = ["data=audio_folder", f"data.sample_rate={args.sample_rate}", f"data.clip_seconds={args.seconds}",
                     "encoder=trimodal", "~encoder.image", "~encoder.text", "encoder.audio.width=8",
                     "objective.simclr.modality=audio", "objective.simclr.augment=audio_default",
                     "objective.simclr.projection_dim=32", "objective.simclr.hidden_dim=64"]
    cfg = compose("pretrain", [*common, *overrides])
    memory = TreeMemory()
    started = time.perf_counter()
    trainer = Trainer(cfg, args.run_dir)
    build_seconds = time.perf_counter() - started
    rss_after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logger = RunLogger(args.run_dir, None, mode="disabled")
    times = []
    step = trainer.train_step

    def timed(batch):
        out = step(batch)
        times.append(time.perf_counter())
        return out

    trainer.train_step = timed
    begin = time.perf_counter()
    trainer.fit(logger)
    logger.close()
    peak_tree = memory.stop()
    # images/s over the steps after the first (which includes worker start-up)
    per_second = (len(times) - 1) * args.batch / (times[-1] - times[0]) if len(times) > 1 else \
        args.batch / (times[0] - begin)
    return {"modality": args.modality, "files": args.files, "batch": args.batch, "steps": args.steps,
            "num_workers": args.workers, "build_seconds": round(build_seconds, 3),
            "rss_after_build_mb": round(rss_after_build, 1),
            "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_with_workers_mb": round(peak_tree, 1), "workers_at_peak": memory.peak_workers,
            "items_per_s": round(per_second, 2), "torch_threads": torch.get_num_threads()}


def run_size(args, modality: str, root: Path, files: int, run_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--modality", modality, "--root", str(root), "--files", str(files),
           "--run-dir", str(run_dir), "--steps", str(args.steps), "--batch", str(args.batch),
           "--workers", str(args.workers), "--size", str(args.size), "--sample-rate", str(args.sample_rate),
           "--seconds", str(args.seconds)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{modality} run with {files} files failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="50/100 images at 32×32, 50 clips of 0.25 s, 2 steps")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--data", default=None, help="folder for the generated data (default: a temporary one)")
    p.add_argument("--image-files", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--audio-files", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=224, help="data.size (images are generated at 256×256)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seconds", type=float, default=2.0)
    # internal: one measured run
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--modality", default="image", help=argparse.SUPPRESS)
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--files", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    side = 256
    if args.tiny:
        args.image_files, args.audio_files, args.steps, args.batch = [50, 100], [50], 2, 8
        args.size, side, args.seconds, args.workers = 32, 32, 0.25, 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        rows = []
        for n in args.image_files:
            folder = make_images(data / f"images_{n}_{side}px", n, side)
            rows.append(run_size(args, "image", folder, n, Path(tmp) / f"run_image_{n}"))
        for n in args.audio_files:
            folder = make_clips(data / f"clips_{n}_{args.sample_rate}hz_{args.seconds}s", n, args.sample_rate,
                                args.seconds)
            rows.append(run_size(args, "audio", folder, n, Path(tmp) / f"run_audio_{n}"))
    growth = {}
    for modality in ("image", "audio"):
        mine = [r for r in rows if r["modality"] == modality]
        if len(mine) >= 2:
            small, large = mine[0], mine[-1]
            growth[modality] = {
                "files": [small["files"], large["files"]],
                "main_rss_ratio": round(large["peak_rss_main_mb"] / small["peak_rss_main_mb"], 3),
                "rss_with_workers_ratio": round(large["peak_rss_with_workers_mb"] / small["peak_rss_with_workers_mb"], 3)}
    ok = all(g["main_rss_ratio"] <= 1.2 and g["rss_with_workers_ratio"] <= 1.2 for g in growth.values())
    emit({"tiny": args.tiny, "image_side": side, "size": args.size, "rows": rows, "growth": growth,
          "goal_rss_ratio_at_most": 1.2, "goal_met": ok}, args.out)


if __name__ == "__main__":
    main()
