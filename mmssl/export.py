"""`mmssl export RUN_DIR|CHECKPOINT --out DIR`: encoders as safetensors, loadable without pickle.

The export folder holds one ``<modality>.safetensors`` per encoder (its ``state_dict``: plain tensors,
no code) and ``config.json`` with each encoder's registry spec (``{"name": ..., **options}``), how
each modality's files are read (``inputs``), the step and the source checkpoint. A run trained with a
cross-modal objective (clip, siglip, bind) also gets ``joint.safetensors``: its joint-space projection
heads and learned logit scales (``config.json["joint"]`` says how to rebuild them), so zero-shot and
retrieval work from the export alone. An open_clip image tower is also written as
``image.open_clip.safetensors``, keyed as open_clip's own ``VisionTransformer`` (``config.json["open_clip"]``
holds its ``embed_dim`` and ``vision_cfg``; see ``mmssl.inference.open_clip_vision_tower``). Reading an export
(``load_encoders``, ``load_export``, ``is_export``) lives in ``mmssl.inference``, beside ``load_run``::

    encoders = mmssl.load_encoders("exports/simclr")        # {"image": ConvNet(...)}
    features = encoders["image"](images).pooled        # (B, dim)
    run = mmssl.inference.load_run("exports/bind")    # + run.heads, run.embed, run.classify

Other objective heads (projectors, predictors, momentum copies) are training machinery and are not exported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mmssl import checkpoint
from mmssl.config import stored_config
from mmssl.encoders.base import Encoder
from mmssl.errors import MMSSLError
from mmssl.inference import (
    CONFIG,
    FORMAT,
    JOINT,
    JointSpace,
    input_spec,
    joint_objective,
    rebuild_encoders,
)
from mmssl.io import atomic_write
from mmssl.plugins import load_plugins


def export(target: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write ``out/<modality>.safetensors`` + ``out/config.json`` from a run folder or checkpoint."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MMSSLError(f"--out {out} is a file, not a folder; pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MMSSLError(f"--out {out} is not empty; pass --force to overwrite or choose another folder")
    _, path, state = checkpoint.find(target)
    config = state.get("config") if isinstance(state, dict) else None
    if isinstance(config, dict):  # inert data: no resolvers, downloads or init weights
        config = OmegaConf.to_container(stored_config(config, path))
    if not isinstance(config, dict) or not isinstance(config.get("encoder"), dict) or "model" not in state:
        raise MMSSLError(f"{path} is not an mmssl pretraining checkpoint (no model/config.encoder); "
                         "export a run folder of `mmssl pretrain`")
    specs = config["encoder"]
    # clone + contiguous: safetensors refuses views that share storage
    weights = {m: {k: v.detach().clone().contiguous() for k, v in checkpoint.encoder_weights(state["model"], m).items()}
               for m in specs}
    empty = [m for m, w in weights.items() if not w]
    if empty:
        raise MMSSLError(f"{path} has no weights for encoder(s) {empty}; is it a checkpoint of this config?")
    # rebuild and load before writing anything, so a broken checkpoint leaves no half export behind
    plugins = list(config.get("plugins") or [])
    load_plugins(plugins)  # encoders or objectives registered by a plugin
    encoders = rebuild_encoders(specs, weights, str(path))
    joint = _joint_space(config, state["model"], encoders, str(path))
    meta = {"format": FORMAT, "encoders": specs, "inputs": input_spec(config, encoders), "plugins": plugins,
            "step": int(state.get("step", 0)), "source": str(path)}
    out.mkdir(parents=True, exist_ok=True)
    for modality, tensors in weights.items():
        save_file(tensors, str(out / f"{modality}.safetensors"), metadata={"format": FORMAT, "modality": modality})
    if joint is not None:
        save_file({k: v.detach().clone().contiguous() for k, v in joint.state_dict().items()}, str(out / JOINT),
                  metadata={"format": FORMAT, "objective": joint.spec["objective"]})
        meta["joint"] = joint.spec
    if specs.get("image", {}).get("name") == "open_clip_vision":
        visual = {k.removeprefix("visual."): v for k, v in weights["image"].items() if k.startswith("visual.")}
        save_file(visual, str(out / "image.open_clip.safetensors"), metadata={"format": "open_clip VisionTransformer"})
        meta["open_clip"] = {"image": _open_clip_vision_config(specs["image"])}
    if isinstance(config.get("data"), dict) and config["data"].get("name"):
        meta["data"] = {"name": config["data"]["name"]}
    atomic_write(out / CONFIG, json.dumps(meta, indent=2) + "\n")
    return out


def _joint_space(config: dict, model_state: dict, encoders: dict[str, Encoder], where: str):
    """The run's cross-modal objective's heads and scales as a ``JointSpace``, or None when it has none."""
    from mmssl.build import OBJECTIVE_RUN_KEYS
    from mmssl.config import registry_kwargs
    from mmssl.registry import OBJECTIVES

    modules = torch.nn.ModuleDict(encoders)
    for slot, node in (config.get("objective") or {}).items():
        if not isinstance(node, dict) or "name" not in node:
            continue
        objective = OBJECTIVES.build(node["name"], modules, **registry_kwargs(node, OBJECTIVE_RUN_KEYS))
        holder = torch.nn.Module()
        holder.objectives = torch.nn.ModuleDict({slot: objective})
        if joint_objective(holder) is None:
            continue
        prefix = f"objectives.{slot}."
        checkpoint.load_matching(objective, {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)},
                                 what=f"{where}: objective {slot!r}")
        return JointSpace.from_objective(objective, node, encoders)
    return None


def _open_clip_vision_config(spec: dict) -> dict:
    """``{"embed_dim", "vision_cfg"}`` of an ``open_clip_vision`` encoder spec, as open_clip builds the tower."""
    from mmssl.encoders.base import open_clip_config

    if spec.get("arch"):
        cfg = open_clip_config(spec["arch"])
        return {"arch": spec["arch"], "embed_dim": cfg["embed_dim"], "vision_cfg": cfg["vision_cfg"]}
    vision_cfg = dict(image_size=32, patch_size=4, width=128, layers=4, head_width=32) | dict(spec.get("config") or {})
    return {"embed_dim": int(spec.get("embed_dim", 128)), "vision_cfg": vision_cfg}


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
    print(f"exported {names} and {CONFIG} to {out}" + ("" if (out / JOINT).exists() else " (no joint-space heads: the "
          "run has no cross-modal objective)"))
    return out
