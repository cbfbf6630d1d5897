"""SimCLR pretraining throughput: mmssl against lightly's documented recipe, in one invocation.

Same torchvision ResNet-18 (standard stem, as in lightly's examples), 32×32 RGB inputs from real images
(Fashion-MNIST resized to 32×32 RGB when installed, else scikit-learn digits), batch 256, the SimCLR
augmentation family (random resized crop 0.08–1, flip, colour jitter 0.8/0.2 hue with p=0.8, grayscale
0.2; no blur, as lightly's CIFAR recipe), a 2048-wide projection head to 128 and NT-Xent.

- mmssl: `mmssl pretrain` machinery (Trainer.train_step): uint8 tensors in memory, batched per-sample
  augmentation, channels_last memory format (`trainer.channels_last=true`), fp32.
- lightly: SimCLRTransform on PIL images in a DataLoader (2 workers), SimCLRProjectionHead, NTXentLoss,
  SGD, fp32 — its documented recipe.

Blocks of steps alternate between the two (A B A B …) and the median images/s of each is reported, so
slow drifts of the machine affect both. Also: FLOPs per mmssl step (torch.utils.flop_counter) against
the measured fp32 and bf16 matmul peaks (model-FLOP utilisation).

    python bench/pretrain_simclr.py                 # full run (~5 min on 2 cores)
    python bench/pretrain_simclr.py --tiny          # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, has, lightly_simclr_model, matmul_peak_gflops, median, peak_rss_mb  # noqa: E402

from mmssl.config import compose  # noqa: E402
from mmssl.train.trainer import Trainer  # noqa: E402


def mmssl_trainer(args) -> Trainer:
    data = ["data=fashion_mnist", f"data.limit={args.images}"] if Path("/usr/share/datasets/fashion-mnist").is_dir() \
        and not args.tiny else ["data=digits"]
    cfg = compose("pretrain", [
        *data, "data.size=32", "data.channels=3", f"data.batch_size={args.batch}",
        "encoder=resnet18", "encoder.image.cifar_stem=false",
        "objective.simclr.temperature=0.5", "objective.simclr.hidden_dim=2048", "objective.simclr.projection_dim=128",
        "+objective.simclr.augment_kwargs.crop_scale=[0.08,1.0]", "+objective.simclr.augment_kwargs.flip_p=0.5",
        "+objective.simclr.augment_kwargs.jitter=0.8", "+objective.simclr.augment_kwargs.hue=0.2",
        "+objective.simclr.augment_kwargs.grayscale_p=0.2", "+objective.simclr.augment_kwargs.blur_p=0.0",
        "+objective.simclr.augment_kwargs.degrees=0.0",
        f"trainer.precision={args.precision}", f"trainer.channels_last={str(args.channels_last).lower()}",
        "trainer.steps=100000", "trainer.progress=false", "logger.mode=disabled", "run_dir=/tmp/mmssl-bench",
        "trainer.optimizer=sgd", "trainer.lr=0.06"])
    cfg.objective.simclr.augment_kwargs = {k: v for k, v in cfg.objective.simclr.augment_kwargs.items()
                                           if k not in ("noise_std",)}
    return Trainer(cfg, "/tmp/mmssl-bench")


def mmssl_runner(args):
    trainer = mmssl_trainer(args)
    batches = trainer.batches()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        return steps * args.batch / (time.perf_counter() - start)

    return trainer, run


def lightly_runner(args, images: torch.Tensor):
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from torchvision.transforms.functional import to_pil_image

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            self.images = [to_pil_image(img) for img in images]
            self.transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(self.images[i]), 0

    model, criterion = lightly_simclr_model(), NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    loader = torch.utils.data.DataLoader(Data(), batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=args.lightly_workers, persistent_workers=args.lightly_workers > 0)

    def batches():
        while True:
            yield from loader

    it = batches()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            (x0, x1), _ = next(it)
            loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return steps * args.batch / (time.perf_counter() - start)

    return run


def flops_per_step(trainer: Trainer, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                        help="trainer.precision (auto: measured on this machine, see README)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lightly-workers", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.steps, args.rounds, args.images = 4, 1, 1, 16

    trainer, run_mmssl = mmssl_runner(args)
    images = trainer.data.train.data["image"][: args.images]
    run_lightly = lightly_runner(args, images) if has("lightly") else None
    run_mmssl(1)  # warm-up (allocator, kernels)
    if run_lightly:
        run_lightly(1)
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_mmssl(args.steps))
        if run_lightly:
            theirs.append(run_lightly(args.steps))
    flops = flops_per_step(trainer, next(trainer.batches()))
    step_seconds = args.batch / median(ours)
    seconds = 0.1 if args.tiny else 1.5
    peak32, peak16 = matmul_peak_gflops(torch.float32, seconds=seconds), matmul_peak_gflops(torch.bfloat16, seconds=seconds)
    result = {
        "batch": args.batch, "precision": args.precision, "channels_last": args.channels_last, "mmssl_images_per_s": round(median(ours), 1),
        "lightly_images_per_s": round(median(theirs), 1) if theirs else None,
        "speedup": round(median(ours) / median(theirs), 2) if theirs else None,
        "gflops_per_step": round(flops / 1e9, 1), "achieved_gflops": round(flops / step_seconds / 1e9, 1),
        "fp32_matmul_peak_gflops": round(peak32, 1), "bf16_matmul_peak_gflops": round(peak16, 1),
        "mfu_vs_fp32_peak": round(flops / step_seconds / 1e9 / peak32, 3),
        "mfu_vs_bf16_peak": round(flops / step_seconds / 1e9 / peak16, 3),
        "peak_rss_mb": round(peak_rss_mb()), "threads": torch.get_num_threads(),
    }
    if not run_lightly:
        print("lightly is not installed (pip install -e '.[bench]'): peer skipped", file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
