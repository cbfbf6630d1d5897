"""`mmssl export RUN_DIR|CHECKPOINT --out DIR`: encoders as safetensors, loadable without pickle.

The export folder holds one ``<modality>.safetensors`` per encoder (its ``state_dict``: plain tensors,
no code) and ``config.json`` with each encoder's registry spec (``{"name": ..., **options}``), the
step and the source checkpoint. ``load_encoders(dir)`` rebuilds every encoder from the registry and
loads its weights, so a consumer needs mmssl and the folder, nothing else::

    encoders = load_encoders("exports/simclr")        # {"image": ConvNet(...)}
    features = encoders["image"](images).pooled        # (B, dim)

Objective heads (projectors, predictors, momentum copies) are training machinery and are not exported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mmssl.config import stored_config
from mmssl.encoders.base import Encoder
from mmssl.errors import MMSSLError
from mmssl.train import checkpoint

FORMAT = "mmssl-encoders/1"
CONFIG = "config.json"


def _find_checkpoint(target: Path) -> tuple[Path, dict]:
    """The newest valid checkpoint of a run folder (or its checkpoints/ folder), or the given file."""
    if target.is_dir():
        found = checkpoint.latest(target / "checkpoints") or checkpoint.latest(target)
        if found is None:
            raise MMSSLError(f"no valid checkpoint in {target} (looked in {target / 'checkpoints'}); "
                             "pass a run folder of `mmssl pretrain` or a step_*.pt file")
        return found
    return target, checkpoint.load(target)


def encoder_weights(model_state: dict, modality: str) -> dict[str, torch.Tensor]:
    """``encoders.<modality>.*`` entries of a pretraining model's state dict, prefix removed."""
    prefix = f"encoders.{modality}."
    # clone + contiguous: safetensors refuses views that share storage
    return {k[len(prefix):]: v.detach().clone().contiguous() for k, v in model_state.items() if k.startswith(prefix)}


def export(target: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write ``out/<modality>.safetensors`` + ``out/config.json`` from a run folder or checkpoint."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MMSSLError(f"--out {out} is a file, not a folder; pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MMSSLError(f"--out {out} is not empty; pass --force to overwrite or choose another folder")
    path, state = _find_checkpoint(Path(target))
    config = state.get("config") if isinstance(state, dict) else None
    if isinstance(config, dict):  # inert data: no resolvers, downloads or init weights
        config = OmegaConf.to_container(stored_config(config, path))
    if not isinstance(config, dict) or not isinstance(config.get("encoder"), dict) or "model" not in state:
        raise MMSSLError(f"{path} is not an mmssl pretraining checkpoint (no model/config.encoder); "
                         "export a run folder of `mmssl pretrain`")
    specs = config["encoder"]
    weights = {m: encoder_weights(state["model"], m) for m in specs}
    empty = [m for m, w in weights.items() if not w]
    if empty:
        raise MMSSLError(f"{path} has no weights for encoder(s) {empty}; is it a checkpoint of this config?")
    # rebuild and load before writing anything, so a broken checkpoint leaves no half export behind
    _build(specs, weights, str(path))
    out.mkdir(parents=True, exist_ok=True)
    for modality, tensors in weights.items():
        save_file(tensors, str(out / f"{modality}.safetensors"), metadata={"format": FORMAT, "modality": modality})
    meta = {"format": FORMAT, "encoders": specs, "step": int(state.get("step", 0)), "source": str(path)}
    (out / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _build(specs: dict, weights: dict[str, dict[str, torch.Tensor]], where: str) -> dict[str, Encoder]:
    from mmssl.train.build import build_encoders

    encoders = build_encoders(specs)
    for modality, encoder in encoders.items():
        checkpoint.load_matching(encoder, weights[modality], what=f"{where}: {modality} encoder")
        encoder.eval()
    return dict(encoders.items())


def load_encoders(directory: str | Path) -> dict[str, Encoder]:
    """Rebuild the exported encoders (eval mode) from ``directory``: ``{modality: Encoder}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        meta = json.loads((d / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMSSLError(f"{d / CONFIG} is missing or unreadable ({exc}); export with `mmssl export RUN --out DIR`") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("encoders"), dict):
        raise MMSSLError(f"{d / CONFIG} is not an mmssl encoder export (format {meta.get('format')!r}, expected {FORMAT!r})")
    weights = {}
    for modality in meta["encoders"]:
        file = d / f"{modality}.safetensors"
        try:
            weights[modality] = load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise MMSSLError(f"cannot read {file} ({str(exc).splitlines()[0][:160]}); re-export the run") from None
    return _build(meta["encoders"], weights, str(d))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one-line `error: …` through the CLI instead of usage + exit
        raise MMSSLError(f"mmssl export: {message}; usage: mmssl export RUN_DIR|CHECKPOINT --out DIR [--force]")


def main(argv: list[str]) -> Path:
    parser = _Parser(prog="mmssl export", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="run folder of `mmssl pretrain` or a step_*.pt checkpoint")
    parser.add_argument("--out", required=True, help="folder to write <modality>.safetensors and config.json into")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = parser.parse_args(argv)
    out = export(args.target, args.out, force=args.force)
    names = ", ".join(sorted(p.name for p in out.glob("*.safetensors")))
    print(f"exported {names} and {CONFIG} to {out}")
    return out
