"""The `mmssl` command.

  mmssl pretrain [overrides…]        self-supervised pretraining + probes (Hydra overrides; --help, --cfg job, -m)
  mmssl eval RUN_DIR|CHECKPOINT      probes, diagnostics and plots of a saved run
  mmssl eval RUN data=… [data.*=…]   its frozen encoders on other data → RUN/eval/<data name>/
  mmssl list KIND                    registered encoders | objectives | augmentations | datasets | intrinsic_rewards
  mmssl rl [overrides…]              PPO with registry encoders, auxiliary objectives, intrinsic rewards (same flags)
  mmssl sweep create|local SPEC …    wandb sweeps, online or without a server
  mmssl report RUNS…                 multi-seed tables (mean, IQM, bootstrap CIs) and plots
  mmssl finetune RUN [overrides…]    few-label fine-tuning / semi-supervised training of a pretrained encoder
  mmssl export RUN --out DIR         encoders (+ joint-space heads) as safetensors + config, loadable without pickle
  mmssl embed RUN INPUTS… --out F    embeddings of files/folders/manifests → .npy | .parquet | .safetensors

Every command answers ``--help``. ``mmssl pretrain`` and ``mmssl rl`` take Hydra's own flags (``--cfg job``,
``--info``, ``-m``/``--multirun``, ``--config-dir``, ``-sc install=bash``; see ``mmssl.cli_hydra``).
Errors a user can fix print one line, ``error: …``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings

from mmssl.errors import MMSSLError

# subcommands whose arguments are passed through untouched to ``module.main(argv)``
PASS_THROUGH = {
    "pretrain": "mmssl.train.pretrain",
    "rl": "mmssl.rl.run",
    "sweep": "mmssl.sweep",
    "report": "mmssl.report",
    "finetune": "mmssl.finetune",
    "export": "mmssl.export",
    "embed": "mmssl.inference",
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


def cmd_eval(target: str, overrides: list[str] | None = None) -> None:
    from mmssl import checkpoint
    from mmssl.build import build_data, build_model
    from mmssl.config import stored_config
    from mmssl.eval.suite import evaluate, probe_table

    if overrides:  # another dataset: RUN/eval/<data name>/, nothing else in the run folder changes
        from mmssl.eval.transfer import results_table, run

        results, out_dir = run(target, overrides)
        task = json.loads((out_dir / "results.json").read_text())["eval"].get("task", "classification")
        print(results_table(results, task))
        print(f"results: {out_dir}")
        return
    run_dir, ckpt_path, state = checkpoint.find(target)
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
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    try:
        _dispatch(parser, argv)
        return 0
    except MMSSLError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message holds
        return 2
    except KeyboardInterrupt:
        how = "the same command with resume=true name=<the folder's name>" if argv[0] == "finetune" else \
            "resume=true run_dir=<the run folder>"
        print(f"interrupted; resume with {how}", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    """``mmssl``'s own parser: the pass-through commands (which parse their arguments themselves), eval, list."""
    parser = argparse.ArgumentParser(prog="mmssl", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in PASS_THROUGH:
        sub.add_parser(name, add_help=False)
    eval_parser = sub.add_parser("eval", help="evaluate a run folder or checkpoint (on its data, or data=… overrides)")
    eval_parser.add_argument("target")
    eval_parser.add_argument("overrides", nargs="*", help="data=<option> data.<key>=… eval.<key>=…")
    sub.add_parser("list", help="list registered entries").add_argument("kind")
    return parser


def _dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Run the command ``argv[0]``: shell completion, a pass-through module (through Hydra's flags for the
    commands that compose a config), ``list`` or ``eval``."""
    if argv[0] in ("-sc", "--shell-completion"):  # the installed bash hook asking for completions
        from mmssl import cli_hydra

        cli_hydra.query_from_shell()
        return
    if argv[0] in PASS_THROUGH:
        try:
            module = importlib.import_module(PASS_THROUGH[argv[0]])
        except ModuleNotFoundError as exc:
            raise MMSSLError(f"`mmssl {argv[0]}` is not available in this build ({exc})") from None
        from mmssl import cli_hydra

        if argv[0] in cli_hydra.CONFIG_NAMES:
            cli_hydra.main(argv[0], argv[1:], module.main)
        else:
            module.main(argv[1:])
        return
    args = parser.parse_args(argv)
    if args.command == "list":
        cmd_list(args.kind)
    elif args.command == "eval":
        cmd_eval(args.target, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
