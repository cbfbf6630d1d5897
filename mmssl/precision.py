"""The numeric precision a run trains in: the one this machine is fastest at, chosen by measurement.

``resolve_precision(value, device, workload)`` turns a config value into a :class:`Precision`:

- ``fp32`` / ``bf16`` / ``fp16``: forced (``fp16`` needs CUDA: its loss scaling exists for CUDA's fp16
  kernels; on CPU use ``bf16``, which has fp32's exponent range and needs no scaling);
- ``auto`` on CUDA: bf16 when the GPU supports it (Ampere and later: bf16 tensor cores are never slower
  than fp32 there), else fp32;
- ``auto`` on CPU: measured. Whether bf16 pays off on a CPU depends on the chip (AVX-512-BF16 / AMX
  dot products run bf16 GEMMs several times faster than fp32; without them bf16 is emulated and slower)
  *and* on the workload (a small MLP is dominated by per-op overhead, where autocast's casts only add
  cost). So a short probe times one forward+backward of a ``Workload`` — by default a 512×512 matmul
  and a small 3×3 convolution (NHWC), or the run's own network (pretraining: its model on a batch of its
  data; PPO: its agent on a minibatch; ``module_workload``) — in fp32 and in bf16 autocast, alternating the
  two in blocks and taking each one's median block time, and picks bf16 (with channels_last) when it is
  faster by more than ``MARGIN``. A few hundred milliseconds to a few seconds, once per machine and workload.

The probe's result is cached as JSON in ``$MMSSL_CACHE_DIR`` (else ``$XDG_CACHE_HOME/mmssl``, else
``~/.cache/mmssl``), one file per (CPU model and flags, device name, torch version, workload):
``precision-<hash>.json``, written atomically; an unreadable or corrupt file is re-probed quietly.
``MMSSL_AUTO_PRECISION=fp32|bf16`` makes ``auto`` resolve to that without probing (the test suite and
reproducible benchmarks set it). A run records what it chose in ``precision.json`` in its folder
(:func:`write_record`); a resumed run reads it back (:func:`read_record`) so it continues in the
precision it started in, whatever the cache or a new probe says. Under torchrun every rank must
compute alike: :func:`agree` gives every rank rank 0's choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from mmssl import collectives
from mmssl.errors import ConfigError
from mmssl.io import WriteError, atomic_write
from mmssl.logging import console

NAMES = ("fp32", "bf16", "fp16")
CHOICES = ("auto", *NAMES)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: bf16 is chosen over fp32 only when its median step is this many times faster (noise and the cost of a
#: less precise run are not worth a few per cent)
MARGIN = 1.1
RECORD = "precision.json"
#: bumped when what a probe measures changes (2: the encoders skip dead kernel taps, so cached choices re-probe)
CACHE_VERSION = 2


@dataclass(frozen=True)
class Precision:
    """A run's precision: ``name`` (fp32 | bf16 | fp16), whether conv inputs/weights are channels_last, where
    the choice came from (``forced`` by the config, ``device`` rule on CUDA, ``probe``, ``cache``, ``env``
    (MMSSL_AUTO_PRECISION), ``recorded`` in the run folder) and the probe's figures (median ms per
    workload step per candidate, speedup = fp32 / bf16) when there was one."""

    name: str = "fp32"
    channels_last: bool = False
    source: str = "forced"
    probe: dict = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """The forward's context: ``torch.autocast`` to bf16/fp16 (matmuls and convs in the low precision,
        reductions, norms and losses in fp32), or nothing for fp32."""
        device_type = torch.device(device).type
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device | str) -> torch.amp.GradScaler | None:
        """fp16's dynamic loss scaler (fp16 gradients underflow below 6e-8 without it); None otherwise."""
        device_type = torch.device(device).type
        if self.name != "fp16":
            return None
        if device_type != "cuda":
            raise ConfigError(f"precision fp16 needs CUDA (device is {device_type}); use bf16 or fp32")
        return torch.amp.GradScaler("cuda")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str | None = None) -> Precision:
        """The inverse of ``to_json`` (``source`` replaces the stored one); ValueError on anything else."""
        if not isinstance(data, dict) or data.get("name") not in NAMES:
            raise ValueError(f"not a precision record: {data!r}")
        probe = data.get("probe") or {}
        if not isinstance(probe, dict):
            raise ValueError(f"not a precision record: {data!r}")
        return cls(str(data["name"]), bool(data.get("channels_last", False)),
                   source or str(data.get("source", "recorded")), probe)

    def describe(self) -> str:
        """One line: ``bf16+channels_last (probe: 1.41x fp32's speed)``."""
        text = self.name + ("+channels_last" if self.channels_last else "")
        if "speedup" in self.probe:
            text += f" ({self.source}: bf16 at {self.probe['speedup']:.2f}x fp32's speed on {self.probe.get('workload')})"
        else:
            text += f" ({self.source})"
        return text


# -- workloads ---------------------------------------------------------------------------------------
@dataclass
class Workload:
    """What the probe times. ``build()`` (called only when a probe runs) allocates what it needs and returns
    ``step(precision)``, one forward+backward under ``precision`` (its autocast, its memory format);
    ``name`` identifies the workload in the cache (two workloads of one name must cost alike)."""

    name: str
    build: Callable[[], Callable[[Precision], None]]


def standard_workload(device: torch.device | str = "cpu", size: int = 512, channels: int = 32,
                      image: int = 32, batch: int = 8) -> Workload:
    """A (size × size) @ (size × size) matmul and a 3×3 convolution over (batch, channels, image, image),
    forward and backward: the two kernels a vision/text encoder spends its time in."""
    device = torch.device(device)

    def build() -> Callable[[Precision], None]:
        gen = torch.Generator(device=device).manual_seed(0)  # its own stream: the probe draws nothing from the run's
        a = torch.randn(size, size, device=device, generator=gen, requires_grad=True)
        b = torch.randn(size, size, device=device, generator=gen)
        x = torch.randn(batch, channels, image, image, device=device, generator=gen)
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)

        def step(precision: Precision) -> None:
            fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
            net, inp = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            with precision.autocast(device):
                loss = (a @ b).float().square().mean() + net(inp).float().square().mean()
            loss.backward()
            a.grad = None
            net.zero_grad(set_to_none=True)

        return step

    return Workload(f"standard-{size}-{channels}x{image}x{image}-b{batch}", build)


def module_workload(name: str, make: Callable[[], tuple[torch.nn.Module, Callable[..., torch.Tensor]]],
                    device: torch.device | str = "cpu", memory_format: bool = False) -> Workload:
    """One forward+backward of ``loss_fn(module, to_format)``, ``(module, loss_fn) = make()`` — a copy of a
    PPO network on a minibatch of real observations, or of a pretraining model on a batch of its data. With
    ``memory_format`` a channels_last candidate converts the module first and ``to_format(x)`` puts a 4-d
    input in its format (the step as the run will take it); otherwise ``to_format`` returns its input.
    Gradients are cleared after each step; nothing is updated."""

    def build() -> Callable[[Precision], None]:
        module, loss_fn = make()

        def step(precision: Precision) -> None:
            fmt = torch.channels_last if memory_format and precision.channels_last else torch.contiguous_format
            if memory_format:
                module.to(memory_format=fmt)
            with precision.autocast(device):
                loss = loss_fn(module, lambda x: x.contiguous(memory_format=fmt) if memory_format and x.ndim == 4 else x)
            loss.float().backward()
            module.zero_grad(set_to_none=True)

        return step

    return Workload(name, build)


# -- the probe ---------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(workload: Workload, device: torch.device | str = "cpu", budget_s: float = 0.3,
          rounds: int = 5) -> Precision:
    """Time ``workload`` in fp32 and in bf16 (+channels_last) autocast; the faster by ``MARGIN`` wins.

    Two warm-up steps each (one when a step is slower than ``budget_s``), then ``rounds`` rounds that each run a block of k steps of fp32 then of bf16
    (the order flips every round, so a neighbour's load spike hits both alike); k is sized from the
    warm-up so the whole probe takes about ``budget_s`` (fewer rounds of one step, down to one, when a
    step alone is slower than that: a ResNet on a real batch probes in seconds, once per machine). Each
    candidate's figure is its median block time per step. The torch RNG is forked: a run's random stream is
    the same with or without the probe.
    """
    device = torch.device(device)
    candidates = {"fp32": Precision("fp32", False, "probe"), "bf16": Precision("bf16", True, "probe")}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        step = workload.build()
        first = {}
        for key, cand in candidates.items():
            for _ in range(2):  # the first call of a kernel pays for its setup (oneDNN primitives, autocast caches)
                start = time.perf_counter()
                step(cand)
                _sync(device)
                first[key] = time.perf_counter() - start
                if first[key] > budget_s:  # a step that slow amortises its setup: one warm-up is enough
                    break
        # a slow step (a ResNet on a real batch): fewer rounds (down to one), so a probe stays a few seconds
        rounds = max(1, min(rounds, int(3 * budget_s / (2 * max(*first.values(), 1e-6)))))
        per_block = budget_s / (2 * rounds)
        reps = max(1, min(50, int(per_block / max(*first.values(), 1e-6))))
        times: dict[str, list[float]] = {k: [] for k in candidates}
        for r in range(rounds):
            order = list(candidates) if r % 2 == 0 else list(reversed(candidates))
            for key in order:
                start = time.perf_counter()
                for _ in range(reps):
                    step(candidates[key])
                _sync(device)
                times[key].append((time.perf_counter() - start) / reps)
    fp32_ms, bf16_ms = (1e3 * statistics.median(times[k]) for k in ("fp32", "bf16"))
    speedup = fp32_ms / bf16_ms
    figures = {"workload": workload.name, "fp32_ms": round(fp32_ms, 4), "bf16_ms": round(bf16_ms, 4),
               "speedup": round(speedup, 3), "margin": MARGIN, "rounds": rounds, "steps_per_block": reps}
    return replace(candidates["bf16" if speedup > MARGIN else "fp32"], probe=figures)


# -- the cache ---------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$MMSSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmssl``, else ``~/.cache/mmssl``."""
    if os.environ.get("MMSSL_CACHE_DIR"):
        return Path(os.environ["MMSSL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmssl"


def _cpu_signature() -> str:
    """The CPU's model name and feature flags (what decides its bf16 speed), or the platform's description."""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [next((ln for ln in lines if ln.startswith(key)), "") for key in ("model name", "flags")]
        if any(wanted):
            return "\n".join(wanted)
    return f"{platform.machine()} {platform.processor()}"


def hardware_key(device: torch.device | str, workload: str) -> dict:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"cpu": _cpu_signature(), "device": name, "torch": torch.__version__, "workload": workload}


def cache_path(device: torch.device | str, workload: str) -> Path:
    key = json.dumps(hardware_key(device, workload), sort_keys=True)
    return cache_dir() / f"precision-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def read_cache(device: torch.device | str, workload: str) -> Precision | None:
    """The cached probe result for this machine and workload, or None (missing, unreadable, corrupt, stale)."""
    path = cache_path(device, workload)
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or data.get("key") != hardware_key(device, workload):
            return None
        return Precision.from_json(data["precision"], source="cache")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_cache(precision: Precision, device: torch.device | str, workload: str) -> None:
    """Cache ``precision`` atomically; a cache that cannot be written is skipped (the next run probes again)."""
    data = {"version": CACHE_VERSION, "key": hardware_key(device, workload), "precision": precision.to_json()}
    with contextlib.suppress(WriteError, OSError):
        atomic_write(cache_path(device, workload), json.dumps(data, indent=2) + "\n")


# -- resolving a config value ------------------------------------------------------------------------
def check_value(value: str, device: torch.device | str, key: str = "trainer.precision") -> str:
    """``value`` if it is a precision this device can run; else a one-line ConfigError."""
    device, value = torch.device(device), str(value)
    if value not in CHOICES:
        raise ConfigError(f"{key} must be one of {', '.join(CHOICES)}, got {value!r}")
    if value == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs CUDA (device is {device.type}); use {key}=bf16 or {key}=fp32")
    return value


def resolve_precision(value: str, device: torch.device | str, workload: Workload | None = None,
                      key: str = "trainer.precision", use_cache: bool = True) -> Precision:
    """The :class:`Precision` for config value ``value`` (auto | fp32 | bf16 | fp16) on ``device``.

    ``workload``: what the CPU probe times (default :func:`standard_workload`); ``key`` names the config
    key in errors and in the console line a probe prints.
    """
    device = torch.device(device)
    value = check_value(value, device, key)
    if value != "auto":
        return Precision(value, value != "fp32", "forced")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return Precision("bf16" if supported else "fp32", supported, "device")
    forced = os.environ.get("MMSSL_AUTO_PRECISION")
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ConfigError(f"MMSSL_AUTO_PRECISION must be fp32 or bf16, got {forced!r}; unset it to measure")
        return Precision(forced, forced == "bf16", "env")
    workload = workload or standard_workload(device)
    if use_cache and (cached := read_cache(device, workload.name)) is not None:
        return cached
    chosen = probe(workload, device)
    if use_cache:
        write_cache(chosen, device, workload.name)
    console(f"{key}=auto: {chosen.describe()}")
    return chosen


def backward(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()``; with fp16's ``scaler`` the loss is scaled first and the gradients unscaled after,
    so clipping and the non-finite check see true gradients."""
    if scaler is None:
        loss.backward()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """``optimizer.step()``, or the scaler's step (skipped when the gradients overflowed) and scale update."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def lacks_kernel(exc: BaseException) -> bool:
    """Whether ``exc`` is an op refusing a low-precision dtype (``"pdist" not implemented for 'BFloat16'``,
    ``expected scalar type Float but found BFloat16``): a model or plugin loss that only runs in fp32."""
    text = str(exc)
    return isinstance(exc, NotImplementedError | RuntimeError) and ("BFloat16" in text or "Half" in text)


def fallback(precision: Precision, exc: BaseException, key: str = "trainer.precision") -> Precision:
    """fp32 (source ``fallback``) for a chosen (auto) low precision that ``exc`` showed some op cannot run in;
    a forced one is the user's to change: ConfigError naming the op's message and the key."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if precision.source == "forced":
        raise ConfigError(f"{key}={precision.name}: {first}; an op of this model or objective has no "
                          f"{precision.name} kernel here: use {key}=fp32 (or cast that loss to float)") from None
    return Precision("fp32", precision.channels_last, "fallback", {**precision.probe, "fallback_from": precision.name,
                                                                    "reason": first[:200]})


# -- the run folder and ranks ------------------------------------------------------------------------
def read_record(run_dir: str | Path) -> Precision | None:
    """The precision a run folder recorded (``precision.json``), or None when it has none (a fresh run)."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        return None
    try:
        return Precision.from_json(json.loads(path.read_text()), source="recorded")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete it to choose the precision afresh "
                          "(the resumed run may then differ from an uninterrupted one)") from None


def write_record(run_dir: str | Path, precision: Precision) -> Path:
    """``precision.json`` in the run folder: name, channels_last, source and the probe figures."""
    return atomic_write(Path(run_dir) / RECORD, json.dumps(precision.to_json(), indent=2) + "\n")


def agree(precision: Precision) -> Precision:
    """Rank 0's precision on every rank (under torchrun a probe on each rank could choose differently)."""
    if collectives.world_size() == 1:
        return precision
    box = [precision.to_json() if collectives.rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return Precision.from_json(box[0])


def for_run(value: str, device: torch.device | str, run_dir: str | Path | None, resume: bool,
            workload: Workload | None = None, key: str = "trainer.precision") -> Precision:
    """A run's precision: on ``resume`` the one its folder recorded (bit-exact continuation), else
    ``resolve_precision``; decided on rank 0 and shared with every rank (which all check ``value`` first,
    so a bad one fails alike everywhere instead of leaving ranks waiting)."""
    check_value(value, device, key)
    chosen = Precision()
    if collectives.rank() == 0:
        recorded = read_record(run_dir) if resume and run_dir is not None else None
        chosen = recorded or resolve_precision(value, device, workload, key)
    return agree(chosen)
