"""DD-PPO: one update at world size 2 (gloo, each rank its own half of the envs, gradients averaged by
DistributedDataParallel) equals one update at world size 1 over the same rollouts.

World size 1 collects a (T, 4) CartPole rollout and optimises it with minibatches that are the union of
what the two ranks use; each rank optimises its (T, 2) half of the same rollout with its own minibatch
order. CURL-style inverse dynamics and advantage normalisation make the test cover an auxiliary
objective and the cross-rank minibatch statistics.
"""

import os

import pytest
import torch
import torch.multiprocessing as mp

from mmssl.config import compose
from tests.gloo import free_port

T, ENVS, EPOCHS, MINIBATCHES = 8, 4, 2, 2


def _cfg(num_envs: int, *extra: str):
    return compose("rl", ["env=cartpole", f"agent.num_envs={num_envs}", f"agent.num_steps={T}",
                          f"agent.num_minibatches={MINIBATCHES}", f"agent.update_epochs={EPOCHS}",
                          "agent.total_timesteps=4096", "agent.learning_rate=0.01", "logger.mode=disabled",
                          "objective=rl_inverse_dynamics", "objective.inverse_dynamics.hidden_dim=16", *extra])


def _local_orders(world: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    local = T * ENVS // world
    return [torch.randperm(local, generator=g).split(local // MINIBATCHES) for _ in range(EPOCHS)]


def _to_global(local_index: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Index into a rank's flattened (T, N/W) half → index into the flattened (T, N) rollout."""
    per = ENVS // world
    return (local_index // per) * ENVS + rank * per + local_index % per


def _slice_envs(data: dict, part: slice) -> dict:
    from dataclasses import replace

    r = data["rollout"]
    rollout = replace(r, obs=r.obs[:, part], next_obs=r.next_obs[:, part], actions=r.actions[:, part],
                      rewards=r.rewards[:, part], dones=r.dones[:, part], features=r.features[:, part],
                      next_features=r.next_features[:, part])
    return {k: (v[:, part] if torch.is_tensor(v) else v) for k, v in data.items()} | {"rollout": rollout}


def _params(ppo) -> dict:
    return {k: v.detach().clone() for k, v in [*ppo.agent.state_dict().items(), *ppo.aux.state_dict(prefix="aux.").items()]}


def _worker(rank, world, port, data, start, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mmssl.rl.ppo import PPO

    ppo = PPO(_cfg(ENVS // world))
    try:
        assert type(ppo.learner).__name__ == "DistributedDataParallel"
        assert ppo.num_updates == 4096 // (T * ENVS)  # the run's frames are shared out over the ranks
        ppo.agent.load_state_dict({k: v for k, v in start.items() if not k.startswith("aux.")})
        ppo.aux.load_state_dict({k[4:]: v for k, v in start.items() if k.startswith("aux.")})
        per = ENVS // world
        stats = ppo.optimise(_slice_envs(data, slice(rank * per, (rank + 1) * per)), orders=_local_orders(world))
        assert stats["aux/inverse_dynamics/loss"]
        if rank == 0:
            torch.save(_params(ppo), out)
    finally:
        ppo.close()
        torch.distributed.destroy_process_group()


def test_one_update_at_two_ranks_equals_one_process(tmp_path):
    from mmssl.rl.ppo import PPO

    single = PPO(_cfg(ENVS))
    try:
        data = single.collect()
        start = _params(single)
        orders = [[torch.cat([_to_global(mb, r, 2) for r in range(2)]) for mb in epoch] for epoch in _local_orders(2)]
        assert all(len(mb) == T * ENVS // MINIBATCHES for epoch in orders for mb in epoch)
        single.optimise(data, orders=orders)
        expected = _params(single)
    finally:
        single.close()
    out = tmp_path / "rank0.pt"
    mp.start_processes(_worker, args=(2, free_port(), data, start, str(out)), nprocs=2, join=True,
                       start_method="fork")
    got = torch.load(out, weights_only=True)
    moved = [k for k in expected if not torch.equal(expected[k], start[k])]
    assert len(moved) > len(expected) // 2  # the update did change the policy, value and aux weights
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5, rtol=1e-4), (name, (got[name] - value).abs().max())


def test_rl_device_option_is_validated():
    from mmssl.errors import ConfigError
    from mmssl.rl.ppo import PPO

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        PPO(_cfg(2, "device=cuda"))


def _run_worker(rank, world, port, run_dir, extra):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mmssl.rl.run import run

    try:
        run(compose("rl", ["env=cartpole", "agent.num_envs=2", "agent.num_steps=16", "agent.num_minibatches=2",
                           "agent.update_epochs=1", "agent.total_timesteps=192", "logger.mode=disabled",
                           "progress=false", "eval.episodes=0", "checkpoint_every=1", f"run_dir={run_dir}", *extra]))
    finally:
        torch.distributed.destroy_process_group()


def _two_rank_run(run_dir, *extra):
    mp.start_processes(_run_worker, args=(2, free_port(), str(run_dir), extra), nprocs=2, join=True,
                       start_method="fork")
    from mmssl import checkpoint

    return checkpoint.load(checkpoint.checkpoints(run_dir / "checkpoints")[-1])


def test_two_rank_ppo_resumes_bit_identically(tmp_path):
    straight = _two_rank_run(tmp_path / "straight")
    assert straight["ppo"]["global_step"] == 192 and straight["ppo"]["update_index"] == 3  # 2 ranks × 2 envs × 16 steps
    assert len(straight["ppo_per_rank"]) == 2
    # each rank its own envs: different env snapshots, RNG streams
    assert not torch.equal(straight["ppo_per_rank"][0]["rng"]["torch"], straight["ppo_per_rank"][1]["rng"]["torch"])
    _two_rank_run(tmp_path / "stopped", "stop_after_updates=1")
    resumed = _two_rank_run(tmp_path / "stopped", "resume=true")
    for name, value in straight["ppo"]["agent"].items():
        assert torch.equal(resumed["ppo"]["agent"][name], value), name
    for r in range(2):
        assert torch.equal(resumed["ppo_per_rank"][r]["rng"]["torch"], straight["ppo_per_rank"][r]["rng"]["torch"])
