"""Use a trained run (or its export) from Python: ``load_run(path) -> LoadedRun``; read `mmssl export` folders
(``load_encoders``, ``load_export``, ``open_clip_vision_tower``; ``mmssl.export`` writes them).

    run = load_run("runs/bind")                       # a run folder, a step_*.pt file or an `mmssl export` folder
    z = run.embed("image", ["a.png", "b.png"])        # (2, D): joint-space (unit-norm) for cross-modal runs
    t = run.embed("text", ["a seven", "a three"])
    run.similarity(z, t)                              # (2, 2) cosine similarities
    run.classify("image", "my_digits/", ["zero", "one", …])   # zero-shot class indices

``inputs`` may be a tensor of already-read items, a folder, a manifest (``.csv``/``.jsonl`` with a
column named after the modality), a text file (one text per line) or a list of files / strings. Files
are read the way the run's training data was: images grey or RGB by the encoder's ``in_channels`` and
resized to the training size, audio resampled to the encoder's rate and fitted to the clip length,
text tokenised to the encoder's context length (``LoadedRun.inputs``).

The joint space (``JointSpace``: one projection head per bound modality plus the learned logit scales)
is taken out of the run's cross-modal objective (clip, siglip, bind), so it lives with the encoders
rather than inside training machinery; exports carry it as ``joint.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmssl import checkpoint
from mmssl.encoders.base import Encoder
from mmssl.encoders.heads import mlp
from mmssl.errors import ConfigError, DataError, MMSSLError
from mmssl.plugins import load_plugins
from mmssl.registry import parameters
from mmssl.types import AUDIO, IMAGE, TEXT

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TEXT_EXTENSIONS = (".txt",)
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
#: image size of built-in datasets whose config has no size key
DATASET_IMAGE_SIZE = {"digits": 8, "trimodal_digits": 8, "fashion_mnist": 28}
#: how joint-space heads are rebuilt: the keyword arguments of a binding objective that shape them
JOINT_KEYS = ("projection_dim", "hidden_dim", "projection_layers")

#: encoders by modality (a plain mapping or an ``nn.ModuleDict``)
Modules = Mapping[str, nn.Module] | nn.ModuleDict
#: what ``embed`` reads: a tensor of already-read items, or files / folders / manifests / texts
Inputs = torch.Tensor | np.ndarray | str | Path | Sequence[str | Path]


# -- the joint space ---------------------------------------------------------------------------------
class JointSpace(nn.Module):
    """Per-modality projection heads into one joint space and the learned logit scale of every bound pair.

    ``project(m, pooled (B, dim_m)) -> (B, projection_dim)`` unit vectors; ``scale(a, b)`` = 1/τ of the
    pair (clamped at 100 as in CLIP). ``spec``: ``{"objective", "modalities", "pairs", projection_dim,
    hidden_dim, projection_layers, "input_dims"}`` — enough to rebuild it without the objective.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        self.spec = dict(spec)
        dims = self.spec["input_dims"]
        self.heads = nn.ModuleDict({m: mlp(int(dims[m]), int(spec["hidden_dim"]), int(spec["projection_dim"]),
                                           int(spec["projection_layers"]), batch_norm=False) for m in spec["modalities"]})
        self.log_scales = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in spec["pairs"]})
        if spec.get("biases"):
            self.biases = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in spec["pairs"]})

    @property
    def modalities(self) -> list[str]:
        return list(self.heads)

    def project(self, modality: str, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.heads[modality](pooled).float(), dim=-1)

    def scale(self, a: str, b: str) -> float:
        key = f"{a}_{b}" if f"{a}_{b}" in self.log_scales else f"{b}_{a}"
        if key not in self.log_scales:  # an unbound pair (bind with an anchor): the mean learned scale
            return float(torch.stack(list(self.log_scales.values())).detach().clamp(max=np.log(100)).exp().mean())
        return float(self.log_scales[key].detach().clamp(max=np.log(100)).exp())

    @classmethod
    def from_objective(cls, objective: nn.Module, node: Mapping[str, Any], encoders: Modules) -> JointSpace:
        """The heads and scales of a trained binding objective (``node``: its config entry), weights copied."""
        projections, log_scales = objective.projections, objective.log_scales
        biases = getattr(objective, "biases", None) or nn.ParameterDict()
        if not (isinstance(projections, nn.ModuleDict) and isinstance(log_scales, nn.ParameterDict)
                and isinstance(biases, nn.ParameterDict)):
            raise ConfigError(f"objective {node['name']!r} has joint-space heads of an unknown kind; a binding objective "
                              "holds projections (nn.ModuleDict) and log_scales / biases (nn.ParameterDict)")
        defaults = {p.name: p.default for p in parameters(type(objective))}
        spec = {"objective": str(node["name"]), "modalities": list(projections),
                "pairs": list(log_scales), "biases": len(biases) > 0,
                "input_dims": {m: _encoder_dim(encoders[m]) for m in projections}}
        spec |= {k: int(node.get(k, defaults.get(k))) for k in JOINT_KEYS}
        joint = cls(spec)
        state = {f"heads.{k}": v for k, v in projections.state_dict().items()}
        state |= {f"log_scales.{k}": v for k, v in log_scales.state_dict().items()}
        if spec["biases"]:
            state |= {f"biases.{k}": v for k, v in biases.state_dict().items()}
        checkpoint.load_matching(joint, state, what=f"objective {node['name']!r} joint space")
        return joint.eval()


def _encoder_dim(encoder: nn.Module) -> int:
    """``encoder.dim`` (the pooled feature size every ``Encoder`` declares), or a one-line error."""
    dim = getattr(encoder, "dim", None)
    if dim is None:
        raise ConfigError(f"{type(encoder).__name__} has no `dim`; joint-space heads need mmssl Encoders")
    return int(dim)


def joint_objective(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(slot, objective) of the first objective with joint-space heads (``projections`` + ``log_scales``)."""
    objectives = getattr(model, "objectives", None)
    if not isinstance(objectives, nn.ModuleDict):
        return None
    for slot, objective in objectives.items():
        if hasattr(objective, "projections") and hasattr(objective, "log_scales"):
            return slot, objective
    return None


# -- what the encoders read --------------------------------------------------------------------------
def input_spec(cfg: Mapping[str, Any], encoders: Modules) -> dict[str, dict[str, Any]]:
    """How each modality's files must be read for ``encoders`` trained on ``cfg``'s data.

    image: ``channels`` (the encoder's in_channels) and ``size`` (the training images' side);
    audio: ``sample_rate`` (the encoder's) and ``clip_seconds``; text: ``context_length``.
    """
    data = cfg.get("data") or {}
    spec: dict[str, dict[str, Any]] = {}
    if IMAGE in encoders:
        size = data.get("size") or data.get("image_size") or DATASET_IMAGE_SIZE.get(str(data.get("name")))
        if size is None and getattr(encoders[IMAGE], "image_size", None):
            size = encoders[IMAGE].image_size
            size = size[0] if isinstance(size, list | tuple) else size
        spec[IMAGE] = {"channels": int(getattr(encoders[IMAGE], "in_channels", 3)), "size": int(size or 32)}
    if AUDIO in encoders:
        spec[AUDIO] = {"sample_rate": int(getattr(encoders[AUDIO], "sample_rate", data.get("sample_rate") or 16000)),
                       "clip_seconds": float(data.get("clip_seconds") or 1.0)}
    if TEXT in encoders:
        spec[TEXT] = {"context_length": int(getattr(encoders[TEXT], "context_length", data.get("context_length") or 77))}
    return spec


def _extensions(modality: str) -> tuple[str, ...]:
    return {IMAGE: IMAGE_EXTENSIONS, AUDIO: AUDIO_EXTENSIONS, TEXT: TEXT_EXTENSIONS}.get(modality, ())


def guess_modality(inputs: Iterable[str | Path]) -> str:
    """The modality of a list of files / folders by their extensions, or a one-line error."""
    found = set()
    for item in inputs:
        p = Path(item)
        files = [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else [p]
        for q in files:
            for m in (IMAGE, AUDIO, TEXT):
                if q.suffix.lower() in _extensions(m):
                    found.add(m)
    if len(found) != 1:
        raise ConfigError(f"cannot tell the modality of the inputs (found {sorted(found) or 'no known file types'}); "
                          "pass --modality image|audio|text")
    return found.pop()


def collect(modality: str, inputs: str | Path | Iterable[str | Path]) -> list[str]:
    """The items behind ``inputs``: file paths (image, audio) or strings (text), in a stable order."""
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    items = [x for item in inputs for x in _collect_one(modality, item)]
    if not items:
        raise DataError(f"no {modality} inputs given")
    return items


def _collect_one(modality: str, item: str | Path) -> list[str]:
    """The items behind one input: a folder's files, a manifest's column, a text file's lines, or the input itself
    (a file; for text, a string not named like a ``.txt`` / manifest file)."""
    if modality == TEXT and Path(str(item)).suffix.lower() not in TEXT_EXTENSIONS + MANIFEST_EXTENSIONS:
        return [str(item)]
    p = Path(item)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.suffix.lower() in _extensions(modality))
        if not files:
            raise DataError(f"no {modality} files ({', '.join(_extensions(modality))}) under {p}")
        return [str(q) for q in files]
    if p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
        return _manifest_column(modality, p)
    if modality == TEXT:  # a text file's lines, or a string that only looks like a file name
        from mmssl.data.text import read_lines

        return list(read_lines(p)[0]) if p.is_file() else [str(item)]
    if not p.is_file():
        raise DataError(f"{p} is not a file, folder or manifest; pass {modality} files, a folder of them or a manifest")
    return [str(p)]


def _manifest_column(modality: str, path: Path) -> list[str]:
    """The ``modality`` column of a ``.csv`` / ``.jsonl`` manifest: texts, or file paths resolved against its folder."""
    from mmssl.data.manifest import read_rows

    rows = read_rows(path)
    if not rows or modality not in rows[0]:
        raise DataError(f"manifest {path} has no {modality!r} column (columns: {sorted(rows[0]) if rows else []})")
    cells = [str(r[modality]) for r in rows]
    return cells if modality == TEXT else [c if Path(c).is_absolute() else str(path.parent / c) for c in cells]


def read_items(modality: str, items: Sequence[str], spec: Mapping[str, Any]) -> torch.Tensor:
    """Read ``items`` into one batch tensor the encoder takes (images (B, C, H, W) in [0, 1], audio (B, samples), text ids)."""
    if modality == TEXT:
        from mmssl.data.tokenize import tokenize

        return tokenize(list(items), int(spec["context_length"]))
    if modality == AUDIO:
        from mmssl.data.audio import fit_length, read_audio

        samples = int(round(float(spec["clip_seconds"]) * int(spec["sample_rate"])))
        return torch.stack([fit_length(read_audio(p, int(spec["sample_rate"])), samples) for p in items])
    if modality == IMAGE:
        from mmssl.data.images import decode_image

        return torch.stack([decode_image(Path(p), int(spec["size"]), int(spec["channels"])) for p in items]).float() / 255
    raise ConfigError(f"cannot read {modality!r} files; embed image, audio or text (or pass a tensor)")


# -- the loaded run ----------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A trained run's encoders (eval mode), joint space (None for single-modality objectives) and config."""

    encoders: nn.ModuleDict
    joint: JointSpace | None
    config: DictConfig
    inputs: dict[str, dict[str, Any]]
    source: Path
    run_dir: Path | None = None
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> nn.ModuleDict:
        """Joint-space projection heads by modality (empty without a cross-modal objective)."""
        return self.joint.heads if self.joint is not None else nn.ModuleDict()

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def to(self, device: str | torch.device) -> LoadedRun:
        self.encoders.to(device)
        if self.joint is not None:
            self.joint.to(device)
        return self

    def _encoder(self, modality: str) -> nn.Module:
        if modality not in self.encoders:
            raise ConfigError(f"the run has no {modality!r} encoder (it has {sorted(self.encoders)}); "
                              f"embed one of those modalities")
        return self.encoders[modality]

    def uses_joint(self, modality: str, joint: bool | None = None) -> bool:
        """Whether ``embed`` returns joint-space embeddings: by default wherever the run has a head for ``modality``."""
        has = self.joint is not None and modality in self.joint.heads
        if joint and not has:
            raise ConfigError(f"{self.source} has no joint-space head for {modality!r}" + (
                f" (heads: {self.joint.modalities})" if self.joint is not None else
                "; it was trained without a cross-modal objective or exported without heads — re-export the run "
                "with `mmssl export RUN --out DIR`, or embed pooled features with joint=False"))
        return has if joint is None else bool(joint)

    @torch.no_grad()
    def encode(self, modality: str, x: torch.Tensor, joint: bool | None = None) -> torch.Tensor:
        """One batch of read items → (B, D): pooled features, or unit-norm joint-space embeddings."""
        encoder = self._encoder(modality)
        device = next(encoder.parameters()).device
        if x.dtype == torch.uint8:
            x = x.float() / 255
        z: torch.Tensor = encoder(x.to(device)).pooled
        if self.uses_joint(modality, joint) and self.joint is not None:  # uses_joint implies a joint space
            return self.joint.project(modality, z).cpu()
        return z.float().cpu()

    def batches(self, modality: str, inputs: Inputs,
                batch_size: int = 256) -> Iterator[tuple[list[str] | None, torch.Tensor]]:
        """(items, read batch) chunks of ``inputs`` (a tensor is chunked as it is, with items None)."""
        if isinstance(inputs, torch.Tensor | np.ndarray):
            x = torch.as_tensor(inputs)
            for start in range(0, len(x), batch_size):
                yield None, x[start:start + batch_size]
            return
        items = collect(modality, inputs)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield chunk, read_items(modality, chunk, self.inputs.get(modality, {}))

    def embed(self, modality: str, inputs: Inputs, batch_size: int = 256, joint: bool | None = None,
              progress: bool = False) -> torch.Tensor:
        """(N, D) embeddings of ``inputs`` (see the module docstring); joint-space by default where the run has one."""
        self.uses_joint(modality, joint)  # fail before reading anything
        if not isinstance(inputs, torch.Tensor | np.ndarray):
            inputs = collect(modality, inputs)  # once: the files behind folders and manifests, in order
        chunks = []
        bar = _progress(len(inputs), f"embed {modality}", progress)
        for _, x in self.batches(modality, inputs, batch_size):
            chunks.append(self.encode(modality, x, joint))
            bar.update(len(x))
        bar.close()
        return torch.cat(chunks)

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (Na, Nb) between embeddings a (Na, D) and b (Nb, D)."""
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise DataError(f"similarity needs (Na, D) and (Nb, D) embeddings of one space, got {tuple(a.shape)} "
                            f"and {tuple(b.shape)}; embed both in the joint space (a cross-modal run)")
        return F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T

    def class_embeddings(self, classes: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """(C, D) unit-norm text embeddings of every class, averaged over prompt ``templates`` (CLIP's ensembling).

        Templates use ``{w}`` for the class name and ``{d}`` for its index; None: the digits prompts.
        """
        from mmssl.data.trimodal import PROMPTS

        if TEXT not in self.encoders or not self.uses_joint(TEXT, None):
            raise ConfigError(f"zero-shot needs a text encoder and joint-space heads; {self.source} has encoders "
                              f"{sorted(self.encoders)} and heads {self.joint.modalities if self.joint else []}"
                              + ("" if self.joint else " — re-export the run with `mmssl export RUN --out DIR` "
                                 "(it keeps the heads) or use a run trained with clip, siglip or bind"))
        templates = list(templates or PROMPTS)
        bad = [t for t in templates if "{w}" not in t and "{d}" not in t]
        if bad:
            raise ConfigError(f"prompt templates {bad} name no class; put {{w}} (class name) or {{d}} (index) in each")
        prompts = [t.format(w=w, d=i) for i, w in enumerate(classes) for t in templates]
        z = self.embed(TEXT, torch.as_tensor(read_items(TEXT, prompts, self.inputs[TEXT])), joint=True)
        return F.normalize(z.view(len(classes), len(templates), -1).mean(dim=1), dim=1)

    def classify(self, modality: str, inputs: Inputs, classes: Sequence[str], templates: Sequence[str] | None = None,
                 batch_size: int = 256) -> torch.Tensor:
        """Zero-shot class indices (N,): ``argmax_c cos(z_i, t_c)`` against the class prompts."""
        class_text = self.class_embeddings(classes, templates)
        if not self.uses_joint(modality, None):
            raise ConfigError(f"{self.source} has no joint-space head for {modality!r}; zero-shot works for "
                              f"{[m for m in self.heads if m != TEXT]}")
        return (self.embed(modality, inputs, batch_size, joint=True) @ class_text.T).argmax(dim=1)


# -- export folders (written by `mmssl export`) -----------------------------------------------------
FORMAT = "mmssl-encoders/1"
CONFIG = "config.json"


JOINT = "joint.safetensors"


def open_clip_vision_tower(directory: str | Path) -> torch.nn.Module:
    """The exported image tower as open_clip's own ``VisionTransformer`` (eval mode), weights loaded.

    It reads images normalised as the mmssl encoder does (3 channels, CLIP mean/std by default).
    """
    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    from safetensors.torch import load_file

    d = Path(directory)
    meta = _read_meta(d)
    if "open_clip" not in meta or "image" not in meta["open_clip"]:
        raise MMSSLError(f"{d} holds no open_clip image tower (its image encoder is "
                         f"{meta['encoders'].get('image', {}).get('name')!r}); export a run with encoder.image.name=open_clip_vision")
    oc = meta["open_clip"]["image"]
    tower: nn.Module = _build_vision_tower(int(oc["embed_dim"]), CLIPVisionCfg(**oc["vision_cfg"]))
    checkpoint.load_matching(tower, load_file(str(d / "image.open_clip.safetensors")), what=f"{d}: open_clip tower")
    tower.eval()
    return tower


def rebuild_encoders(specs: dict, weights: dict[str, dict[str, torch.Tensor]], where: str) -> dict[str, Encoder]:
    """Encoders from registry specs ``{modality: {name, **options}}`` with ``weights`` loaded (eval mode)."""
    from mmssl.build import build_encoders

    encoders = build_encoders(specs)
    for modality, encoder in encoders.items():
        checkpoint.load_matching(encoder, weights[modality], what=f"{where}: {modality} encoder")
        encoder.eval()
    return {m: e for m, e in encoders.items() if isinstance(e, Encoder)}


def _read_meta(d: Path) -> dict:
    try:
        meta = json.loads((d / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMSSLError(f"{d / CONFIG} is missing or unreadable ({exc}); export with `mmssl export RUN --out DIR`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("encoders"), dict):
        raise MMSSLError(f"{d / CONFIG} is not an mmssl encoder export (format {meta.get('format')!r}, expected {FORMAT!r})")
    load_plugins(meta.get("plugins") or [])  # encoders registered by a plugin need it imported again
    return meta


def is_export(directory: str | Path) -> bool:
    """Whether ``directory`` holds an ``mmssl export`` (its config.json says so)."""
    try:
        return bool(json.loads((Path(directory) / CONFIG).read_text()).get("format") == FORMAT)
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def load_export(directory: str | Path) -> LoadedRun:
    """An export folder as ``LoadedRun``: encoders, the joint space when exported, input spec."""
    from omegaconf import OmegaConf
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    meta = _read_meta(d)
    encoders = torch.nn.ModuleDict(load_encoders(d))
    joint = None
    if meta.get("joint"):
        joint = JointSpace(meta["joint"])
        try:
            state = load_file(str(d / JOINT))
        except (OSError, SafetensorError) as exc:
            raise MMSSLError(f"cannot read {d / JOINT} ({str(exc).splitlines()[0][:160]}); re-export the run") from None
        checkpoint.load_matching(joint, state, what=f"{d}: joint space")
        joint.eval()
    config = OmegaConf.create({"encoder": meta["encoders"], "data": meta.get("data") or {}, "joint": meta.get("joint")})
    inputs = meta.get("inputs") or input_spec({}, encoders)
    return LoadedRun(encoders, joint, config, inputs, d, None, int(meta.get("step", 0)))


def load_encoders(directory: str | Path) -> dict[str, Encoder]:
    """Rebuild the exported encoders (eval mode) from ``directory``: ``{modality: Encoder}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    meta = _read_meta(d)
    weights = {}
    for modality in meta["encoders"]:
        file = d / f"{modality}.safetensors"
        try:
            weights[modality] = load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise MMSSLError(f"cannot read {file} ({str(exc).splitlines()[0][:160]}); re-export the run") from None
    return rebuild_encoders(meta["encoders"], weights, str(d))


def _progress(total: int, desc: str, enabled: bool) -> Any:  # a tqdm bar (tqdm ships no type information)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """A run folder, a ``step_*.pt`` checkpoint or an ``mmssl export`` folder → ``LoadedRun`` (eval mode)."""
    p = Path(path)
    if p.is_dir() and (p / CONFIG).is_file() and is_export(p):
        return load_export(p).to(device)
    from mmssl.build import build_model

    run_dir, ckpt_path, state = checkpoint.find(p, accepts=f"{checkpoint.RUN_OR_FILE} or an `mmssl export` folder")
    if not isinstance(state.get("config"), dict) or "model" not in state:
        raise ConfigError(f"{ckpt_path} is not an mmssl pretraining checkpoint; pass a run folder of `mmssl pretrain`")
    cfg = OmegaConf.create(state["config"])
    model = build_model(cfg)
    checkpoint.load_matching(model, state["model"], what=str(ckpt_path))
    model.eval()
    found = joint_objective(model)
    joint = JointSpace.from_objective(found[1], cfg.objective[found[0]], model.encoders) if found else None
    return LoadedRun(model.encoders, joint, cfg, input_spec(cfg, model.encoders), ckpt_path, run_dir,
                     int(state.get("step", 0)), {"model": model}).to(device)


def check_output(path: str | Path) -> str:
    """The output format of ``path`` (npy, parquet, safetensors), checked before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".parquet", ".safetensors"):
        raise ConfigError(f"--out {path}: write .npy, .parquet or .safetensors")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError("writing .parquet needs pyarrow, which is not installed; `pip install pyarrow` or "
                              "write .npy / .safetensors") from None
    return suffix[1:]


def write_embeddings(path: str | Path, embeddings: torch.Tensor, items: Sequence[str] | None = None) -> Path:
    """Write (N, D) embeddings to ``.npy`` (plus ``<file>.inputs.txt``), ``.parquet`` or ``.safetensors``."""
    path = Path(path)
    x = embeddings.detach().float().cpu().contiguous()
    fmt = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"input": list(items) if items is not None else [str(i) for i in range(len(x))],
                          "embedding": pa.array(list(x.numpy()), type=pa.list_(pa.float32()))})
        pq.write_table(table, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({"embeddings": x}, str(path), metadata={"inputs": json.dumps(list(items) if items else [])})
    else:
        np.save(path, x.numpy())
        if items is not None:  # row i of the array is line i of this file
            path.with_name(path.name + ".inputs.txt").write_text("\n".join(items) + "\n")
    return path


def main(argv: list[str]) -> Path:
    """``mmssl embed RUN INPUTS… --out FILE [--modality M] [--batch-size N] [--pooled]``."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise MMSSLError(f"mmssl embed: {message}; usage: mmssl embed RUN INPUTS… --out FILE.npy|.parquet|.safetensors "
                             "[--modality image|audio|text] [--batch-size N] [--pooled]")

    parser = Parser(prog="mmssl embed", description="embeddings of files, folders or manifests with a trained run")
    parser.add_argument("run", help="run folder, step_*.pt checkpoint or `mmssl export` folder")
    parser.add_argument("inputs", nargs="+", help="files, folders of files, manifests (.csv/.jsonl) or .txt files (text)")
    parser.add_argument("--out", required=True, help="output .npy, .parquet or .safetensors")
    parser.add_argument("--modality", default=None, help="image | audio | text (default: from the file types)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pooled", action="store_true", help="the encoder's pooled features, not the joint space")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    check_output(args.out)
    run = load_run(args.run, args.device)
    modality = args.modality or guess_modality(args.inputs)
    run._encoder(modality)  # a modality the run cannot embed fails before any file is read
    items = collect(modality, args.inputs)
    z = run.embed(modality, items, args.batch_size, joint=False if args.pooled else None, progress=True)
    out = write_embeddings(args.out, z, items)
    space = "joint-space" if run.uses_joint(modality, False if args.pooled else None) else "pooled"
    print(f"wrote {len(items)} {space} {modality} embeddings ({z.shape[1]}-d) to {out}")
    return out
