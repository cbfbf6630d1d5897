"""How many SIGKILLs does a run survive? Kill pretraining (SimCLR, BYOL) and `mmssl rl` runs at random times
and inside checkpoint writes, resume each, and compare the final state with an uninterrupted run, bit for bit.

    python experiments/reliability/kill_resume.py --kills 40 --rl-kills 10 --out experiments/reliability/results.json

Uses the test-suite harness (tests/reliability/harness.py): children are forked from this already-imported
process, so a kill costs a fraction of a second instead of a 5 s import.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from mmssl import checkpoint  # noqa: E402
from mmssl.config import compose  # noqa: E402
from mmssl.rl.run import run as rl_run  # noqa: E402
from tests.conftest import tiny_overrides  # noqa: E402
from tests.reliability.harness import (  # noqa: E402
    KillStats,
    assert_identical,
    fit,
    kill_inside_save,
    kill_until,
    rl,
)


def pretrain_cfg(run_dir, objective, steps):
    return compose("pretrain", tiny_overrides(run_dir, f"objective={objective}", f"trainer.steps={steps}",
                                              "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2"))


def rl_cfg(run_dir):
    return compose("rl", [f"run_dir={run_dir}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
                          "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=320", "checkpoint_every=1",
                          "agent.normalize_obs=true", "agent.normalize_reward=true"])


def rl_identical(reference: Path, run_dir: Path) -> None:
    a, b = (checkpoint.latest(d / "checkpoints")[1]["ppo"] for d in (reference, run_dir))
    assert a["update_index"] == b["update_index"]
    for key in ("agent", "obs_norm", "reward_scaler"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=40, help="random kills per pretraining objective")
    parser.add_argument("--rl-kills", type=int, default=10, help="random kills of mmssl rl")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for objective in ("simclr", "byol"):
            start = time.perf_counter()
            reference = fit(pretrain_cfg(root / f"ref-{objective}", objective, args.steps), root / f"ref-{objective}")
            seconds = time.perf_counter() - start
            stats = kill_until(lambda d, o=objective: pretrain_cfg(d, o, args.steps), root / f"kill-{objective}",
                               args.kills, max_delay=seconds / 8, seed=0,
                               check=lambda d, r=reference: assert_identical(r, d), max_runs=50)
            for i, (nth_save, nth_replace) in enumerate([(2, 1), (5, 2), (9, 1), (13, 2)]):
                d = root / f"save-{objective}-{i}"
                stats.add(kill_inside_save(pretrain_cfg(d, objective, args.steps), d, nth_save, nth_replace))
                assert_identical(reference, d)
            rows[f"pretrain/{objective}"] = stats
        start = time.perf_counter()
        rl_run(rl_cfg(root / "ref-rl"))
        seconds = time.perf_counter() - start
        stats = kill_until(rl_cfg, root / "kill-rl", args.rl_kills, max_delay=seconds / 5, seed=0, train=rl,
                           check=lambda d: rl_identical(root / "ref-rl", d), max_runs=20)
        d = root / "save-rl"
        stats.add(kill_inside_save(rl_cfg(d), d, 4, 1, train=rl))
        rl_identical(root / "ref-rl", d)
        rows["rl/ppo_cartpole"] = stats
    total = KillStats()
    print(f"{'run':<18} {'kills':>5} {'attempts':>8} {'ckpts checked':>13} {'no checksum':>11} {'temp left':>9} "
          f"{'corrupt':>7}  final state")
    for name, s in rows.items():
        total.add(s)
        print(f"{name:<18} {s.kills:>5} {s.attempts:>8} {s.checkpoints_checked:>13} {s.without_checksum:>11} "
              f"{s.leftover_temp_files:>9} {len(s.corrupt):>7}  bit-identical")
    print(f"{'total':<18} {total.kills:>5} {total.attempts:>8} {total.checkpoints_checked:>13} "
          f"{total.without_checksum:>11} {total.leftover_temp_files:>9} {len(total.corrupt):>7}")
    if args.out:
        args.out.write_text(json.dumps({k: vars(v) for k, v in rows.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
