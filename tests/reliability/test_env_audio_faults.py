"""Environment and audio faults: a crashing async env worker surfaces with its index and the original
traceback; mixed sample rates and silent clips load into one finite, equal-length audio tensor."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv

from mmssl.config import compose
from mmssl.registry import DATASETS, ENCODERS


class CrashingCartPole(CartPoleEnv):
    """CartPole whose copy seeded with ``crash_seed`` raises on its 3rd step (a bug inside an env)."""

    def __init__(self, crash_seed: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.crash_seed, self.seed_used, self.steps = crash_seed, None, 0

    def reset(self, *, seed=None, options=None):
        self.seed_used = seed if seed is not None else self.seed_used
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.seed_used == self.crash_seed and self.steps == 3:
            raise RuntimeError(f"simulated bug in env step (seed {self.seed_used})")
        return super().step(action)


if "mmssl-test/CrashingCartPole-v0" not in gym.registry:
    gym.register("mmssl-test/CrashingCartPole-v0", entry_point=CrashingCartPole, max_episode_steps=500)


def test_async_env_worker_crash_surfaces_with_index_and_traceback():
    import warnings

    from mmssl.rl.ppo import PPO

    # env i is seeded with seed + i, so seed=1 makes worker 1 the one that crashes
    cfg = compose("rl", ["seed=1", "logger.mode=disabled", "progress=false", "env.id=mmssl-test/CrashingCartPole-v0",
                         "env.asynchronous=true", "agent.num_envs=3", "agent.num_steps=8",
                         "agent.total_timesteps=48"])
    ppo = PPO(cfg)
    try:
        # gymnasium reports worker errors as warnings (printed on stderr outside pytest), then re-raises
        with warnings.catch_warnings(record=True) as caught, \
                pytest.raises(RuntimeError, match=r"simulated bug in env step \(seed 2\)"):
            warnings.simplefilter("always")
            ppo.update()
    finally:
        ppo.close()
    report = "\n".join(str(w.message) for w in caught)
    assert "error from Worker-1" in report  # which env crashed
    assert "Traceback" in report and "test_env_audio_faults.py" in report and "in step" in report  # where, originally


def _write_clips(root, rates, silent_rate=None):
    import soundfile as sf

    root.mkdir()
    for i, rate in enumerate(rates):
        t = np.arange(int(0.5 * rate)) / rate
        sf.write(root / f"{i % 2}_spk{i}_{i}.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    if silent_rate:
        sf.write(root / "1_quiet_9.wav", np.zeros(silent_rate // 2, np.float32), silent_rate)


def test_mixed_sample_rates_and_silence_load_and_encode_finite(tmp_path):
    _write_clips(tmp_path / "clips", [8000, 16000, 22050, 44100], silent_rate=11025)
    splits = DATASETS.build("audio_folder", root=str(tmp_path / "clips"), sample_rate=16000, clip_seconds=0.5,
                            test_fraction=0.4)
    waves = torch.cat([splits.train.data["audio"], splits.test.data["audio"]])
    assert waves.shape == (5, 8000) and torch.isfinite(waves).all()
    assert (waves.abs().amax(dim=1) == 0).sum() == 1  # the silent clip stays silent, others carry the tone
    # 440 Hz survives resampling from every rate: the spectral peak of each tone is at 440 Hz ± one bin
    for wave in waves[waves.abs().amax(dim=1) > 0]:
        peak_hz = torch.fft.rfft(wave).abs().argmax().item() * 16000 / 8000
        assert abs(peak_hz - 440) <= 2, peak_hz
    encoder = ENCODERS.build("audio_conv", sample_rate=16000)
    with torch.no_grad():
        out = encoder(waves)
    assert torch.isfinite(out.pooled).all()  # log-mel of digital silence must not produce -inf/NaN
