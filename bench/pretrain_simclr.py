"""SimCLR pretraining: mmssl against lightly's documented recipe in one invocation — speed, MFU and probe accuracy.

Same torchvision ResNet-18 (standard stem, as in lightly's examples; mmssl's encoder skips the kernel taps
that read only padding, ``mmssl.encoders.conv``: the same network and parameters), 32×32 RGB inputs from real images
(Fashion-MNIST resized to 32×32 and repeated to RGB when installed, else scikit-learn digits), batch 256,
the SimCLR augmentation family (random resized crop 0.08–1, flip, colour jitter 0.8/0.2 hue with p=0.8,
grayscale 0.2; no blur, as lightly's CIFAR recipe), a 2048-wide projection head to 128, NT-Xent at
temperature 0.5, SGD at 0.06; the same torch threads on both sides.

- mmssl: the ``mmssl pretrain`` machinery (``Trainer.train_step``): uint8 tensors in memory, batched
  per-sample augmentation, channels_last, ``trainer.precision`` from ``--precision`` (auto: what the
  trainer's measured probe picks on this machine); its run folder is a temporary directory, removed at the end.
- lightly: ``SimCLRTransform`` on PIL images in a DataLoader (``--lightly-workers``), SimCLRProjectionHead,
  NTXentLoss, SGD — its documented recipe, under ``torch.autocast`` when the precision is bf16.

Speed: blocks of ``--steps`` steps alternate between the two (A B A B …) and the median images/s of each
is reported, so slow drifts of the machine affect both. Quality: after the rounds both have taken the
same number of steps; a logistic-regression linear probe on frozen backbone features (512-d) of the
training images, scored on the held-out test images (mmssl.eval.probes). MFU: FLOPs of one mmssl step as
executed (``torch.utils.flop_counter.FlopCounterMode``: the skipped taps are not counted; also reported
with the model's FLOPs as torchvision's network counts them, every tap — the usual MFU, against which the
executed figure is the hardware's utilisation) over its time, against (a) the measured matmul peak of the
dtype in use and (b) the FLOP/s of the bare model (the same ResNet-18 + head forward and backward on
2·batch views of the same shape, dtype and memory format, no data pipeline): the pipeline's share of
the model-only ceiling, the median over ``--pairs`` rounds of single steps of each taken in turn (the
machine's speed drifts more between blocks than the difference measured). The bare model with every tap
(torchvision's network as lightly runs it) takes its turn beside it.

    python bench/pretrain_simclr.py                     # 3 rounds × 20 steps, 8192 images (~10 min on 2 cores)
    python bench/pretrain_simclr.py --quick             # 2 rounds × 3 steps, 2048 images (~1.5 min)
    python bench/pretrain_simclr.py --precision bf16    # bf16 autocast on both sides
    python bench/pretrain_simclr.py --tiny              # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    emit,
    has,
    lightly_simclr_model,
    machine,
    matmul_peak_gflops,
    median,
    peak_rss_mb,
    resnet18_simclr_model,
    table,
)

from mmssl.config import compose  # noqa: E402
from mmssl.encoders.conv import crop_dead_taps  # noqa: E402
from mmssl.train.trainer import Trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def compose_pretrain(args, run_dir: str):
    data = ["data=fashion_mnist", f"data.limit={args.images}"] if FASHION.is_dir() and not args.tiny else ["data=digits"]
    overrides = [
        *data, "data.size=32", "data.channels=3", f"data.batch_size={args.batch}",
        "encoder=resnet18", "encoder.image.cifar_stem=false",
        "objective.simclr.temperature=0.5", "objective.simclr.hidden_dim=2048", "objective.simclr.projection_dim=128",
        "+objective.simclr.augment_kwargs.crop_scale=[0.08,1.0]", "+objective.simclr.augment_kwargs.flip_p=0.5",
        "+objective.simclr.augment_kwargs.jitter=0.8", "+objective.simclr.augment_kwargs.hue=0.2",
        "+objective.simclr.augment_kwargs.grayscale_p=0.2", "+objective.simclr.augment_kwargs.blur_p=0.0",
        "+objective.simclr.augment_kwargs.degrees=0.0",
        f"trainer.channels_last={str(args.channels_last).lower()}", "trainer.steps=100000", "trainer.warmup_steps=0",
        "trainer.progress=false", "logger.mode=disabled", f"run_dir={run_dir}", "trainer.optimizer=sgd", "trainer.lr=0.06"]
    return compose("pretrain", [*overrides, f"trainer.precision={args.precision}"]), "trainer.precision"


def mmssl_runner(args, run_dir: str):
    cfg, key = compose_pretrain(args, run_dir)
    cfg.objective.simclr.augment_kwargs = {k: v for k, v in cfg.objective.simclr.augment_kwargs.items()
                                           if k not in ("noise_std",)}
    trainer = Trainer(cfg, run_dir)
    batches = trainer.batches()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        return steps * args.batch / (time.perf_counter() - start)

    return trainer, run, key, batches


def autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def lightly_runner(args, images: torch.Tensor, dtype: torch.dtype):
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

    def workers(signal_number: int) -> None:
        """Pause (SIGSTOP) or resume (SIGCONT) the loader's worker processes; see ``run``."""
        for worker in getattr(getattr(loader, "_iterator", None), "_workers", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal_number)

    def run(steps: int) -> float:
        """``steps`` steps, images/s. Between its blocks the workers are paused: left running they would
        prefetch the next block's batches on the cores another pipeline's block is being timed on."""
        model.train()
        workers(signal.SIGCONT)
        start = time.perf_counter()
        for _ in range(steps):
            (x0, x1), _ = next(it)
            with autocast(dtype):
                loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        speed = steps * args.batch / (time.perf_counter() - start)
        workers(signal.SIGSTOP)
        return speed

    return model, run, lambda: workers(signal.SIGCONT)


@torch.no_grad()
def lightly_features(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 512):
    """Backbone features (N, 512) of uint8 images (N, 3, H, W), normalised as lightly's SimCLRTransform does."""
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    mean = torch.tensor(IMAGENET_NORMALIZE["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"]).view(1, 3, 1, 1)
    model.eval()
    feats = [model.backbone((x.float() / 255 - mean) / std).flatten(1) for x in images.split(batch)]
    model.train()
    return torch.cat(feats).numpy(), labels.numpy()


def probe_accuracies(trainer: Trainer, lightly_model) -> dict:
    from mmssl.eval.probes import extract_features, linear_probe_accuracy

    train, test = trainer.data.train, trainer.data.test
    encoder = trainer.model.encoders["image"]
    result = {"mmssl": linear_probe_accuracy(*extract_features(encoder, train, "image"),
                                             *extract_features(encoder, test, "image"))}
    if lightly_model is not None:
        result["lightly"] = linear_probe_accuracy(*lightly_features(lightly_model, train.data["image"], train.labels),
                                                  *lightly_features(lightly_model, test.data["image"], test.labels))
    return {k: round(v, 4) for k, v in result.items()}


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bare_model(args, dtype: torch.dtype, crop: bool = True):
    """The model alone: ResNet-18 + head forward and backward on (2·batch, 3, 32, 32) views, no data pipeline.

    Returns (FLOPs of one step, run(steps) -> images/s). ``crop``: the network as mmssl runs it
    (``crop_dead_taps``: layer3's and layer4's convolutions skip the taps that read only padding); without it,
    torchvision's network as lightly runs it, whose FLOP count includes those taps.
    """
    model = resnet18_simclr_model()
    if crop:
        crop_dead_taps(model)
    x = torch.randn(2 * args.batch, 3, 32, 32)
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def step():
        with autocast(dtype):
            out = model(x)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * args.batch / (time.perf_counter() - start)

    return count_flops(step), run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    parser.add_argument("--pairs", type=int, default=10,
                        help="alternating single steps of the pipeline and the bare models (the model-only ceiling)")
    parser.add_argument("--images", type=int, default=8192, help="Fashion-MNIST training images (test: a sixth)")
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"],
                        help="mmssl's trainer.precision (auto: the trainer's measured choice, its default)")
    parser.add_argument("--lightly-precision", default="fp32", choices=["fp32", "same"],
                        help="fp32: lightly's recipe as its users run it; same: the dtype mmssl resolved")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lightly-workers", type=int, default=2)
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probes")
    parser.add_argument("--quick", action="store_true", help="2 rounds × 3 steps, 2048 images (~1.5 min)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/pretrain_simclr[_quick].json)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.images, args.pairs = 3, 2, 2048, 4
    if args.tiny:
        args.batch, args.steps, args.rounds, args.images, args.pairs = 4, 1, 1, 64, 1
    run_dir = tempfile.mkdtemp(prefix="mmssl-bench-simclr-")
    try:
        result = measure(args, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [["mmssl", result["mmssl_images_per_s"], result["probe_accuracy"].get("mmssl", "-")],
            ["lightly", result["lightly_images_per_s"] or "-", result["probe_accuracy"].get("lightly", "-")],
            ["bare model", result["bare_model"]["images_per_s"], "-"],
            ["bare model, every tap (torchvision's)", result["bare_model_every_tap"]["images_per_s"], "-"]]
    print(table(rows, ["pipeline", "img/s", f"linear probe ({result['steps_each']} steps)"]), file=sys.stderr)
    print(f"mmssl/lightly {result['speedup']}×; of the {result['dtype']} matmul peak: "
          f"{result['mfu_vs_matmul_peak']:.1%} in FLOPs executed, {result['model_flops_vs_matmul_peak']:.1%} in "
          f"the model's FLOPs; {result['share_of_bare_model']:.1%} of the bare model", file=sys.stderr)
    out = args.out or (None if args.tiny else str(RESULTS / f"pretrain_simclr{'_quick' if args.quick else ''}.json"))
    emit(result, out)


def measure(args, run_dir: str) -> dict:
    trainer, run_mmssl, key, batches = mmssl_runner(args, run_dir)
    dtype = trainer.precision.dtype  # auto resolved by the trainer's probe (or its cache)
    lightly_dtype = dtype if args.lightly_precision == "same" else torch.float32
    images = trainer.data.train.data["image"][: args.images]
    lightly_model, run_lightly, resume_lightly = (lightly_runner(args, images, lightly_dtype) if has("lightly")
                                                  else (None, None, lambda: None))
    if run_lightly is None:
        print("lightly is not installed (pip install -e '.[bench]'): peer skipped", file=sys.stderr)
    try:
        return _measure(args, trainer, run_mmssl, key, batches, lightly_model, run_lightly, lightly_dtype)
    finally:
        resume_lightly()  # its paused workers must run to shut down


def _measure(args, trainer, run_mmssl, key, batches, lightly_model, run_lightly, lightly_dtype) -> dict:
    dtype = trainer.precision.dtype
    for run in (run_mmssl, run_lightly):  # warm-up (allocator, kernels)
        if run:
            run(1)
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_mmssl(args.steps))
        if run_lightly:
            theirs.append(run_lightly(args.steps))
    steps_each = 1 + args.rounds * args.steps
    probes = {} if args.no_probe else probe_accuracies(trainer, lightly_model)  # both after steps_each steps
    flops = count_flops(lambda: trainer.train_step(next(batches)))
    peak = matmul_peak_gflops(dtype, seconds=0.1 if args.tiny else 1.5)
    achieved = flops * median(ours) / args.batch / 1e9
    # the model-only ceiling: single steps of the pipeline, the bare model and the bare model with every
    # tap take turns, and each pair's ratio is taken within one moment (this machine's speed drifts by a
    # quarter over tens of seconds, more than the difference measured)
    references = {"bare": bare_model(args, dtype), "every_tap": bare_model(args, dtype, crop=False)}
    for _, run in references.values():
        run(1)
    times: dict[str, list[float]] = {"mmssl": [], "bare": [], "every_tap": []}
    for _ in range(args.pairs):
        for name, run in [("mmssl", run_mmssl), *((k, r) for k, (_, r) in references.items())]:
            times[name].append(args.batch / run(1))

    def reference(name: str) -> dict:
        step_flops, ts = references[name][0], times[name]
        return {"gflops_per_step": round(step_flops / 1e9, 1), "images_per_s": round(args.batch / median(ts), 1),
                "gflops_per_s": round(step_flops / median(ts) / 1e9, 1),
                "pipeline_share": round(median([flops / m / (step_flops / t) for m, t in zip(times["mmssl"], ts)]), 3)}

    bare, plain = reference("bare"), reference("every_tap")
    plain["bare_model_speedup"] = round(median([p / b for p, b in zip(times["every_tap"], times["bare"])]), 3)
    return {
        "benchmark": "pretrain_simclr", "command": "python bench/pretrain_simclr.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "threads": torch.get_num_threads(), "batch": args.batch, "precision": args.precision,
        "precision_key": key, "dtype": str(dtype).removeprefix("torch."), "resolved_precision": trainer.precision.describe(),
        "lightly_dtype": str(lightly_dtype).removeprefix("torch."), "channels_last": args.channels_last,
        "data": str(trainer.cfg.data.name), "train_images": len(trainer.data.train), "test_images": len(trainer.data.test),
        "steps_per_block": args.steps, "rounds": args.rounds, "steps_each": steps_each,
        "mmssl_images_per_s": round(median(ours), 1), "mmssl_blocks": [round(v, 1) for v in ours],
        "lightly_images_per_s": round(median(theirs), 1) if theirs else None,
        "lightly_blocks": [round(v, 1) for v in theirs],
        "speedup": round(median(ours) / median(theirs), 2) if theirs else None,
        "probe_accuracy": probes,
        "gflops_per_step": round(flops / 1e9, 1), "achieved_gflops": round(achieved, 1),
        "matmul_peak_gflops": round(peak, 1), "mfu_vs_matmul_peak": round(achieved / peak, 3),
        # model FLOPs utilisation as usually defined: the network's own FLOPs (torchvision's count, every tap)
        "model_gflops_per_step": plain["gflops_per_step"],
        "model_flops_vs_matmul_peak": round(plain["gflops_per_step"] * median(ours) / args.batch / peak, 3),
        "pairs": args.pairs, "bare_model": bare, "share_of_bare_model": bare["pipeline_share"],
        "bare_model_every_tap": plain,
        "peak_rss_mb": round(peak_rss_mb()),
    }


if __name__ == "__main__":
    main()
