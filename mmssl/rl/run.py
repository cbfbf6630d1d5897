"""``mmssl rl [overrides…]``: train PPO, checkpoint, evaluate (episodes, GIF, state probe), summarise.

The run folder holds config.yaml, metrics.jsonl (one record per PPO update), checkpoints/step_*.pt
(atomic; ``resume=true`` continues bit-identically on CPU), eval_episode.gif and summary.json with the
final training statistics, evaluation returns/success, the linear state probe and env-steps/s.

Multi-GPU PPO (DD-PPO) runs under torchrun: every rank its own envs, gradients averaged by
DistributedDataParallel; rank 0 logs, evaluates and writes checkpoints holding every rank's state.

    torchrun --standalone --nproc_per_node=4 -m mmssl.cli rl device=cuda run_dir=runs/ddppo
"""

from __future__ import annotations

import os
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

import mmssl_envs
from mmssl import checkpoint, precision
from mmssl.config import compose, to_container
from mmssl.errors import ConfigError
from mmssl.io import atomic_write
from mmssl.logging import RunLogger, console, drop_metrics_after
from mmssl.rl.ppo import PPO, to_tensor
from mmssl.train import distributed, run_folder


def main(overrides: list[str]) -> None:
    cfg = compose("rl", overrides)
    run(cfg)


def run(cfg: DictConfig) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the summary dict."""
    mmssl_envs.check_import([cfg.env, eval_env_config(cfg)], cfg.get("plugins") or [])  # before anything is written
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
        threadpool_limits(int(cfg.threads), user_api="blas")  # the numpy update engine's matmuls too
    if cfg.run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("under torchrun every rank must agree on the run folder: pass run_dir=<path>")
    ppo = PPO(cfg)  # builds (and validates) everything before the run folder is touched
    folder = None
    try:
        folder = run_folder.claim_on_rank0(ppo.rank, ppo.world, cfg.run_dir, "rl", resume=bool(cfg.resume),
                                           config=to_container(cfg), allow=list(cfg.get("resume_override") or []),
                                           default=lambda: default_run_dir(cfg))
        if folder is not None:
            OmegaConf.update(cfg, "run_dir", str(folder.path))
        run_dir = Path(cfg.run_dir)
        found = folder.resume_from if folder is not None else \
            (checkpoint.latest(run_dir / "checkpoints") if cfg.resume else None)
        return _train(cfg, ppo, run_dir, found)
    finally:
        if folder is not None:
            folder.release()
        ppo.close()


def default_run_dir(cfg: DictConfig) -> Path:
    return Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-rl-{cfg.env.name}-s{cfg.seed}"


def _train(cfg: DictConfig, ppo: PPO, run_dir: Path, found: tuple[Path, dict] | None) -> dict:
    ckpt_dir = run_dir / "checkpoints"
    if found is not None:
        per_rank = found[1].get("ppo_per_rank") or []
        ppo.load_state_dict(per_rank[ppo.rank] if len(per_rank) == ppo.world else found[1]["ppo"])
        if ppo.rank == 0:
            drop_metrics_after(run_dir, ppo.global_step)
        console(f"resumed from {found[0]} at update {ppo.update_index}")
    if ppo.rank == 0 and ppo.precision.source != "recorded":
        precision.write_record(run_dir, ppo.precision)
    lcfg = cfg.logger
    logger = RunLogger(run_dir, to_container(cfg), mode=lcfg.mode, project=lcfg.project, name=lcfg.name,
                       group=lcfg.group, tags=list(lcfg.tags), resume=found is not None, enabled=ppo.rank == 0)
    every, stop_after = int(cfg.checkpoint_every), cfg.get("stop_after_updates")
    started, done_this_run = time.perf_counter(), 0
    try:
        while ppo.update_index < ppo.num_updates:
            metrics = ppo.update()
            done_this_run += 1
            logger.log(metrics, step=ppo.global_step)
            if cfg.get("progress", True) and ppo.rank == 0 and ppo.update_index % max(1, int(cfg.log_every)) == 0:
                console(f"update {ppo.update_index}/{ppo.num_updates} step {ppo.global_step} "
                        f"return {np.mean(ppo.recent_returns) if ppo.recent_returns else float('nan'):.2f} "
                        f"success {np.mean(ppo.recent_success) if ppo.recent_success else float('nan'):.2f} "
                        f"sps {metrics['steps_per_second']:.0f}")
            last = ppo.update_index == ppo.num_updates
            eval_every = int(cfg.eval.get("every") or 0)
            if eval_every and int(cfg.eval.episodes) > 0 and not last and ppo.update_index % eval_every == 0 \
                    and ppo.rank == 0:
                logger.log(periodic_eval(ppo, cfg), step=ppo.global_step)
            interrupted = stop_after is not None and done_this_run >= int(stop_after)
            if last or interrupted or (every and ppo.update_index % every == 0):
                save(ppo, cfg, ckpt_dir)
            if interrupted and not last:
                logger.close()
                return {"interrupted_at_update": ppo.update_index}
        wall = time.perf_counter() - started
        if ppo.rank != 0:  # only rank 0 evaluates and reports
            return {"global_step": ppo.global_step, "updates": ppo.update_index}
        summary = {
            "global_step": ppo.global_step, "updates": ppo.update_index, "train_wall_clock_s": wall,
            "env_steps_per_second": ppo.num_steps * ppo.num_envs * ppo.world * done_this_run / max(wall, 1e-9),
            "train_return_last100": float(np.mean(ppo.recent_returns)) if ppo.recent_returns else None,
            "train_success_last100": float(np.mean(ppo.recent_success)) if ppo.recent_success else None,
        }
        summary |= evaluate(ppo, cfg, run_dir, logger)
        logger.summary(summary)
        return summary
    finally:
        logger.close()


def save(ppo: PPO, cfg: DictConfig, ckpt_dir: Path) -> Path:
    """Checkpoint the run (refusing non-finite weights: a checkpoint is only ever a state worth resuming)."""
    state = ppo.state_dict()
    # every rank's own envs, RNGs and normaliser state, so a resumed multi-rank run continues exactly
    per_rank = distributed.gather_objects(state) if ppo.world > 1 else []
    path = ckpt_dir / f"step_{ppo.global_step:09d}.pt"
    if ppo.rank == 0:
        checkpoint.save_checked({"ppo": state, "ppo_per_rank": per_rank, "config": to_container(cfg)}, path,
                                int(cfg.keep_checkpoints), {part: state[part] for part in ("agent", "aux", "intrinsic")},
                                f"update {ppo.update_index}")
    if ppo.world > 1:
        torch.distributed.barrier()
    return path


def eval_env_config(cfg: DictConfig) -> dict:
    """The env config evaluation runs on: ``cfg.env`` with ``eval.env_kwargs`` (e.g. ``{split: test}``) merged in."""
    env_cfg = to_container(cfg.env)
    extra = cfg.eval.get("env_kwargs")
    env_cfg["kwargs"] = {**(env_cfg.get("kwargs") or {}), **(to_container(extra) if extra else {})}
    return env_cfg


@torch.no_grad()
def play(ppo: PPO, env, episodes: int, seed: int, deterministic: bool, video_frames: int = 0,
         probe: bool = False) -> dict:
    """Run the policy for ``episodes`` episodes (episode i reset with ``seed + i``; own torch generator, so
    the training RNG is untouched). Returns returns, successes, the first episode's frames (up to
    ``video_frames``) and, with ``probe``, the agent's features and the true states where known."""
    generator = torch.Generator(device=ppo.device).manual_seed(seed)
    ppo.agent.eval()
    out = {"returns": [], "successes": [], "frames": [], "features": [], "states": []}
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done, success = 0.0, False, 0.0
        while not done:
            if ep == 0 and len(out["frames"]) < video_frames:
                out["frames"].append(_render(env))
            x = ppo.prepare(ppo.to_device(to_tensor(_batch1(obs))), update_stats=False)
            step = ppo.agent.act(x, deterministic=deterministic, generator=generator)
            state = mmssl_envs.true_state(env) if probe else None
            if state is not None:
                out["features"].append(step.features[0].cpu().numpy())
                out["states"].append(state)
            action = step.action[0].cpu().numpy()
            obs, reward, terminated, truncated, info = env.step(action if action.shape else action.item())
            total += float(reward)
            done = terminated or truncated
            success = max(success, float(info.get("success", 0.0)))
        out["returns"].append(total)
        out["successes"].append(success)
    return out


def periodic_eval(ppo: PPO, cfg: DictConfig) -> dict:
    """``eval.episodes`` episodes on the evaluation env (same seeds every time) → eval/* metrics for the curve."""
    env = mmssl_envs.make_env(eval_env_config(cfg))
    try:
        out = play(ppo, env, int(cfg.eval.episodes), int(cfg.seed) + 10_000, bool(cfg.eval.deterministic))
    finally:
        env.close()
    return {"eval/return_mean": float(np.mean(out["returns"])), "eval/success_rate": float(np.mean(out["successes"]))}


def evaluate(ppo: PPO, cfg: DictConfig, run_dir: Path, logger: RunLogger) -> dict:
    """Evaluation episodes on a fresh env built from ``eval_env_config`` (own seeds and torch generator).

    Records the first episode as ``eval_episode.gif`` and fits a linear (ridge) probe from the agent's
    frozen features to the true simulator state where ``envs.true_state`` knows it; the probe's R² on
    the last 30 % of the visited states (eval episodes plus ``probe_episodes`` more) is reported.
    """
    ecfg = cfg.eval
    episodes = int(ecfg.episodes)
    if episodes <= 0:
        return {}
    env = mmssl_envs.make_env(eval_env_config(cfg), render_mode="rgb_array" if ecfg.video else None)
    try:
        played = play(ppo, env, episodes + int(ecfg.get("probe_episodes", 0)), int(cfg.seed) + 10_000,
                      bool(ecfg.deterministic), video_frames=int(ecfg.max_video_frames) if ecfg.video else 0,
                      probe=True)  # the extra probe episodes only feed the state probe
    finally:
        env.close()
    returns, successes = played["returns"][:episodes], played["successes"][:episodes]
    out = {"eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
           "eval_success_rate": float(np.mean(successes)), "eval_episodes": episodes}
    logger.log({"eval/return_mean": out["eval_return_mean"], "eval/success_rate": out["eval_success_rate"]},
               step=ppo.global_step)
    frames = [f for f in played["frames"] if f is not None]
    if frames:
        path = run_dir / "eval_episode.gif"
        _save_gif(frames, path)
        logger.log_file(path, "eval/video")
        out["eval_video"] = path.name
    if len(played["states"]) >= 20:
        out |= state_probe(np.stack(played["features"]), np.stack(played["states"]))
    return out


def state_probe(features: np.ndarray, states: np.ndarray, alpha: float = 1.0) -> dict:
    """Ridge regression features (M, D) → states (M, S), fit on the first 70 %, R² on the rest (time order)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    split = int(0.7 * len(features))
    scaler = StandardScaler().fit(features[:split])
    probe = Ridge(alpha=alpha).fit(scaler.transform(features[:split]), states[:split])
    prediction = probe.predict(scaler.transform(features[split:]))
    per_dim = r2_score(states[split:], prediction, multioutput="raw_values")
    return {"probe_state_r2": float(np.mean(per_dim)), "probe_state_r2_per_dim": [float(v) for v in per_dim],
            "probe_samples": int(len(features))}


def _batch1(obs):
    return {k: np.asarray(v)[None] for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]


def _render(env):
    try:
        return env.render()
    except Exception as exc:  # noqa: BLE001 - a missing renderer must not lose the evaluation
        warnings.warn(f"rendering failed ({exc}); no video", stacklevel=2)
        return None


def _save_gif(frames: list[np.ndarray], path: Path, fps: int = 15) -> None:
    """Frames (H, W, 3) uint8 → an animated GIF with Pillow (no ffmpeg/moviepy needed offline)."""
    import io

    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    atomic_write(path, buffer.getvalue())
