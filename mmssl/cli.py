"""The `mmssl` command.

  mmssl pretrain [overrides…]        self-supervised pretraining + probes (Hydra overrides)
  mmssl eval RUN_DIR|CHECKPOINT      probes, diagnostics and plots of a saved run
  mmssl list KIND                    registered encoders | objectives | augmentations | datasets | intrinsic_rewards
  mmssl rl [overrides…]              PPO with registry encoders, auxiliary objectives, intrinsic rewards
  mmssl sweep create|local SPEC …    wandb sweeps, online or without a server
  mmssl report RUNS…                 multi-seed tables (mean, IQM, bootstrap CIs) and plots
  mmssl finetune RUN [overrides…]    few-label fine-tuning / semi-supervised training of a pretrained encoder
  mmssl export RUN --out DIR         encoders as safetensors + config, loadable without pickle

Errors a user can fix print one line, ``error: …``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from mmssl.errors import MMSSLError

# subcommands whose arguments are passed through untouched to ``module.main(argv)``
PASS_THROUGH = {
    "pretrain": "mmssl.train.pretrain",
    "rl": "mmssl.rl.run",
    "sweep": "mmssl.sweep",
    "report": "mmssl.report",
    "finetune": "mmssl.finetune",
    "export": "mmssl.export",
}


def cmd_list(kind: str) -> None:
    from mmssl.registry import REGISTRIES, _suggest

    key = kind if kind in REGISTRIES else kind + "s"
    if key not in REGISTRIES:
        raise MMSSLError(f"unknown kind {kind!r}; {_suggest(kind, list(REGISTRIES))}")
    entries = list(REGISTRIES[key])
    width = max((len(e.name) for e in entries), default=4)
    mods = max((len(",".join(e.modalities)) for e in entries), default=10)
    print(f"{'name':<{width}}  {'modalities':<{mods}}  seq  description")
    for e in entries:
        print(f"{e.name:<{width}}  {','.join(e.modalities) or '-':<{mods}}  {'yes' if e.sequence else 'no ':<3}  {e.doc}")


def cmd_eval(target: str) -> None:
    from mmssl.config import stored_config
    from mmssl.eval.report import evaluate, probe_table
    from mmssl.train import checkpoint
    from mmssl.train.build import build_data, build_model

    path = Path(target)
    if path.is_dir():
        found = checkpoint.latest(path / "checkpoints") or checkpoint.latest(path)
        if found is None:
            raise MMSSLError(f"no valid checkpoint in {path} (looked in {path / 'checkpoints'})")
        ckpt_path, state = found
        run_dir = path
    else:
        ckpt_path, state = path, checkpoint.load(path)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    cfg = stored_config(state.get("config"), ckpt_path)  # inert data: no resolvers, downloads or init weights
    model = build_model(cfg)
    checkpoint.load_matching(model, state["model"])
    results = evaluate(model, build_data(cfg), cfg, baselines=bool(cfg.eval.baselines), run_dir=run_dir)
    print(f"checkpoint: {ckpt_path} (step {state['step']})")
    print(probe_table(results))
    for key, value in sorted(results.items()):
        if "/ssl/" not in key and "/raw/" not in key and "/random/" not in key:
            print(f"{key}: {value:.4f}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
    parser = argparse.ArgumentParser(prog="mmssl", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in PASS_THROUGH:
        sub.add_parser(name, add_help=False)
    sub.add_parser("eval", help="evaluate a run folder or checkpoint").add_argument("target")
    sub.add_parser("list", help="list registered entries").add_argument("kind")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    try:
        if argv[0] in PASS_THROUGH:
            if argv[0] == "pretrain" and any(a in ("-h", "--help") for a in argv[1:]):
                print(__doc__)
                return 0
            try:
                module = importlib.import_module(PASS_THROUGH[argv[0]])
            except ModuleNotFoundError as exc:
                raise MMSSLError(f"`mmssl {argv[0]}` is not available in this build ({exc})") from None
            module.main(argv[1:])
            return 0
        args = parser.parse_args(argv)
        if args.command == "list":
            cmd_list(args.kind)
        elif args.command == "eval":
            cmd_eval(args.target)
        return 0
    except MMSSLError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message holds
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with resume=true run_dir=<the run folder>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
