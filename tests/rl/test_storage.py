"""RolloutBuffer: (T, N, ...) tensors allocated once on the device and written in place, dict observations too."""

import torch

from mmssl.rl.storage import RolloutBuffer


def test_buffer_preallocates_and_writes_rows_in_place():
    buffer = RolloutBuffer(num_steps=3, num_envs=2, device="cpu")
    for t in range(3):
        buffer.put(t, obs={"image": torch.full((2, 1, 4, 4), t, dtype=torch.uint8), "mission": torch.full((2, 5), -t)},
                   actions=torch.tensor([t, t + 1]), values=torch.full((2,), float(t)), values_int=None)
        if t == 0:
            storage = buffer["values"].data_ptr()
    assert buffer["values"].data_ptr() == storage  # one allocation per slot, no appends or stacking
    assert buffer["obs"]["image"].shape == (3, 2, 1, 4, 4) and buffer["obs"]["image"].dtype == torch.uint8
    assert buffer["obs"]["mission"].dtype == torch.int64 and buffer["obs"]["mission"][2].eq(-2).all()
    assert torch.equal(buffer["actions"], torch.tensor([[0, 1], [1, 2], [2, 3]]))
    assert torch.equal(buffer["values"][:, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert buffer.get("values_int") is None  # None values are skipped: no slot
    assert all(t.device == torch.device("cpu") for t in [buffer["values"], *buffer["obs"].values()])


def test_ppo_rollout_lives_on_the_configured_device():
    from mmssl.config import compose
    from mmssl.rl.ppo import PPO

    ppo = PPO(compose("rl", ["agent.num_envs=2", "agent.num_steps=4", "logger.mode=disabled", "device=cpu"]))
    try:
        data = ppo.collect()
    finally:
        ppo.close()
    rollout = data["rollout"]
    assert rollout.obs.shape == (4, 2, 4) and rollout.actions.shape == (4, 2) and rollout.features.shape[:2] == (4, 2)
    tensors = [rollout.obs, rollout.next_obs, rollout.actions, rollout.rewards, rollout.dones, data["advantages"]]
    assert all(t.device == ppo.device for t in tensors)
    assert ppo.global_step == 8
