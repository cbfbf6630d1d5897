"""GPU benchmark, side by side in one invocation: SimCLR ResNet-18 (mmssl vs lightly) and PPO (cuda vs cpu).

1. SimCLR, torchvision ResNet-18 (standard stem) + 2048-wide projector to 128 + NT-Xent (τ 0.5), SGD, at
   32×32 and at 224×224, on a synthetic image folder (JPEGs written here, ImageFolder layout):
   - mmssl: ``mmssl pretrain data=image_folder`` machinery (``Trainer.train_step``): decoded uint8
     batches moved to the device, batched SimCLR augmentation on the device, bf16 autocast
     (``trainer.precision=bf16``), channels_last;
   - lightly: its documented recipe — ``SimCLRTransform`` on PIL images in a torchvision ``ImageFolder``,
     a ``DataLoader`` with every CPU core as a worker (pinned memory), ``SimCLRProjectionHead``,
     ``NTXentLoss``; the same bf16 autocast and channels_last on the device, so only the pipelines differ.
   Same augmentation family both sides: crop 0.08–1, flip, colour jitter 0.8 / hue 0.2 (p 0.8),
   grayscale 0.2; Gaussian blur (p 0.5) at 224 only (lightly's CIFAR recipe has none at 32).
   Reported: images/s (median of alternating timed blocks, ``torch.cuda.synchronize`` around each), the
   FLOPs of one step (``torch.utils.flop_counter``), and MFU = achieved FLOP/s ÷ the device's measured
   bf16 dense-matmul peak (fp32 peak for the fp32 CPU smoke run).
2. PPO (``mmssl rl`` machinery, ``PPO.update``) on vectorised envs — CartPole with an MLP and MiniGrid
   pixels with the Nature CNN — at ``device=cuda`` and ``device=cpu``: env-steps/s.

    python bench/gpu.py            # on a GPU machine: writes bench/results/gpu_<host>.json (~5 min)
    python bench/gpu.py --tiny     # CPU, seconds: what tests/bench runs so the script cannot rot
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, has, lightly_simclr_model, median, peak_rss_mb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a wall-clock interval covers the work it times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192,
                       seconds: float = 2.0) -> float:
    """Measured dense (n × n) @ (n × n) matmul throughput of ``device`` in TFLOP/s, best of timed bursts."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    sync(device)
    best, end, reps = 0.0, time.perf_counter() + seconds, 10 if device.type == "cuda" else 2
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - start) / 1e12)
    return best


def synthetic_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` JPEGs of ``size``×``size`` in two class folders: smooth random colour fields plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def _augment_overrides(size: int) -> list[str]:
    blur = 0.5 if size > 32 else 0.0
    return [f"+data.augment.{k}={v}" for k, v in
            {"crop_scale": "[0.08,1.0]", "flip_p": 0.5, "jitter": 0.8, "hue": 0.2, "jitter_p": 0.8,
             "grayscale_p": 0.2, "blur_p": blur, "degrees": 0.0}.items()]


def mmssl_simclr(args, root: Path, size: int, device: torch.device, run_dir: Path):
    """(images/s of ``steps`` train steps, FLOPs of one step) for mmssl's pipeline."""
    from mmssl.config import compose
    from mmssl.train.trainer import Trainer

    bf16 = device.type == "cuda" or args.cpu_bf16
    cfg = compose("pretrain", [
        "data=image_folder", f"data.root={root}", f"data.size={size}", f"data.batch_size={args.batch}",
        *_augment_overrides(size), "encoder=resnet18", "encoder.image.cifar_stem=false",
        "objective.simclr.temperature=0.5", "objective.simclr.hidden_dim=2048", "objective.simclr.projection_dim=128",
        f"device={device}", f"trainer.precision={'bf16' if bf16 else 'fp32'}", "trainer.channels_last=true",
        "trainer.steps=1000000", "trainer.progress=false", "trainer.optimizer=sgd", "trainer.lr=0.06",
        "trainer.grad_clip=null", "logger.mode=disabled", f"run_dir={run_dir}"])
    if "num_workers" in cfg.data:  # a streaming image folder decodes in DataLoader workers: give it every core
        cfg.data.num_workers = os.cpu_count()
    trainer = Trainer(cfg, run_dir)
    trainer.model.train()
    batches = trainer.batches()

    def run(steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        sync(device)
        return steps * args.batch / (time.perf_counter() - start)

    def flops() -> float:
        from torch.utils.flop_counter import FlopCounterMode

        batch = next(batches)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(batch)
        return counter.get_total_flops()

    return run, flops


def lightly_simclr(args, root: Path, size: int, device: torch.device):
    """(images/s, FLOPs of one step) for lightly's recipe: per-sample PIL transforms in DataLoader workers."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(input_size=size, gaussian_blur=0.5 if size > 32 else 0.0)
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    workers = args.workers if args.workers is not None else os.cpu_count()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")

    model = lightly_simclr_model().to(device, memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    bf16 = device.type == "cuda" or args.cpu_bf16

    def batches():
        while True:
            yield from loader

    it = batches()

    def step(views):
        x0, x1 = (v.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last) for v in views)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run(steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            (views, _labels) = next(it)
            step(views)
        sync(device)
        return steps * args.batch / (time.perf_counter() - start)

    def flops() -> float:
        from torch.utils.flop_counter import FlopCounterMode

        views, _ = next(it)
        with FlopCounterMode(display=False) as counter:
            step(views)
        return counter.get_total_flops()

    return run, flops


def simclr_row(args, root: Path, size: int, device: torch.device, peak_tflops: float, run_dir: Path) -> dict:
    """One image size: both pipelines warmed up, then timed in alternating blocks (A B A B …)."""
    runners = {"mmssl": mmssl_simclr(args, root, size, device, run_dir)}
    if has("lightly"):
        runners["lightly"] = lightly_simclr(args, root, size, device)
    for run, _ in runners.values():
        run(args.warmup)  # allocator, cuDNN autotuning, DataLoader workers started
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, (run, _) in runners.items():
            speeds[name].append(run(args.steps))
    row: dict = {"size": size, "batch": args.batch}
    for name, (_, flops) in runners.items():
        per_step = flops()
        images_per_s = median(speeds[name])
        achieved = per_step * images_per_s / args.batch
        row[name] = {"images_per_s": round(images_per_s, 1), "gflops_per_step": round(per_step / 1e9, 1),
                     "achieved_tflops": round(achieved / 1e12, 5),
                     "mfu": round(achieved / (peak_tflops * 1e12), 4)}
    row["speedup_vs_lightly"] = (round(row["mmssl"]["images_per_s"] / row["lightly"]["images_per_s"], 2)
                                 if "lightly" in row else None)
    return row


def ppo_steps_per_s(device: str, overrides: list[str], frames: int) -> float:
    """Env-steps/s of ``PPO.update`` (rollout, GAE, optimisation) after one warm-up update."""
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    ppo = PPO(compose("rl", [*overrides, f"device={device}", "logger.mode=disabled", "progress=false",
                             "agent.total_timesteps=100000000"]))
    try:
        ppo.update()
        sync(ppo.device)
        start, begin = time.perf_counter(), ppo.global_step
        while ppo.global_step - begin < frames:
            ppo.update()
        sync(ppo.device)
        return (ppo.global_step - begin) / (time.perf_counter() - start)
    finally:
        ppo.close()


def ppo_rows(args, cuda: bool) -> list[dict]:
    envs = {"cartpole_mlp": ["env=cartpole", f"agent.num_envs={args.ppo_envs}", f"agent.num_steps={args.ppo_steps}"]}
    if not args.tiny:
        envs["minigrid_pixels_nature_cnn"] = ["env=minigrid_pixels", "agent_encoder=nature_cnn",
                                              f"agent.num_envs={args.ppo_envs}", f"agent.num_steps={args.ppo_steps}"]
    rows = []
    for name, overrides in envs.items():
        row = {"env": name, "num_envs": args.ppo_envs, "num_steps": args.ppo_steps,
               "cpu_steps_per_s": round(ppo_steps_per_s("cpu", overrides, args.ppo_frames), 1)}
        row["cuda_steps_per_s"] = round(ppo_steps_per_s("cuda", overrides, args.ppo_frames), 1) if cuda else None
        row["cuda_speedup"] = round(row["cuda_steps_per_s"] / row["cpu_steps_per_s"], 2) if cuda else None
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096, help="synthetic JPEGs (256×256) in the folder")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per pipeline and size")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed blocks per pipeline")
    parser.add_argument("--workers", type=int, default=None, help="lightly DataLoader workers (default: every core)")
    parser.add_argument("--ppo-envs", type=int, default=64)
    parser.add_argument("--ppo-steps", type=int, default=128)
    parser.add_argument("--ppo-frames", type=int, default=8192 * 8, help="timed env steps per PPO setting")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU too (default: fp32 there)")
    parser.add_argument("--tiny", action="store_true", help="seconds on a CPU: smoke run of every part")
    parser.add_argument("--out", default=None, help="result JSON (default: bench/results/gpu_<host>.json; "
                                                    "--tiny writes nothing unless given)")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.batch, args.images, args.warmup, args.steps, args.rounds = [32, 64], 4, 16, 1, 1, 1
        args.workers = 2 if args.workers is None else args.workers
        args.ppo_envs, args.ppo_steps, args.ppo_frames = 2, 16, 32
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.tiny:
        print("no CUDA device: this is a GPU benchmark (use --tiny for a CPU smoke run)", file=sys.stderr)
        sys.exit(2)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts (losses kept in float32) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    # MFU's denominator: the measured peak in the dtype the steps compute in (bf16 on the GPU)
    peak_dtype = torch.bfloat16 if cuda or args.cpu_bf16 else torch.float32
    peak = matmul_peak_tflops(device, peak_dtype, n=8192 if cuda else 512, seconds=2.0 if cuda else 0.3)
    result = {"host": socket.gethostname(), "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "cpu_cores": os.cpu_count(), "tiny": args.tiny,
              "matmul_peak_tflops": round(peak, 4), "peak_dtype": str(peak_dtype).removeprefix("torch."), "lightly_installed": has("lightly"), "simclr": [], "ppo": []}
    if not has("lightly"):
        print("lightly is not installed (pip install -e '.[bench]'): the lightly column is skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mmssl-gpu-bench-") as tmp:
        root = synthetic_folder(Path(tmp) / "images", args.images, 256 if not args.tiny else 72)
        for size in args.sizes:
            result["simclr"].append(simclr_row(args, root, size, device, peak, Path(tmp) / f"run{size}"))
            print(result["simclr"][-1], file=sys.stderr)
    result["ppo"] = ppo_rows(args, cuda)
    result["peak_rss_mb"] = round(peak_rss_mb())
    out = args.out or (None if args.tiny else str(RESULTS / f"gpu_{socket.gethostname()}.json"))
    emit(result, out)


if __name__ == "__main__":
    main()
