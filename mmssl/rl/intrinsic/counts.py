"""Count-based exploration: exact counts or SimHash pseudo-counts."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import gymnasium as gym
import numpy as np
import torch

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl.intrinsic.base import IntrinsicReward, check_positive, select_obs
from mmssl.rl.storage import Obs

MODES = ("auto", "exact", "simhash")


@INTRINSIC_REWARDS.register("counts", modalities=("obs",))
class Counts(IntrinsicReward):
    """Count bonus b(s') = 1 / √n(φ(s')) with n counted after the visit (Strehl & Littman 2008;
    #Exploration, Tang et al. 2017).

    φ is exact (a 64-bit BLAKE2 digest of the observation's bytes) for hashable observations — Discrete,
    or small integer arrays such as MiniGrid grids — and SimHash for pixels, continuous states or agent
    features: φ(s) = sign(A·g(s)) ∈ {−1, 1}^``hash_bits`` with A ~ N(0, 1) fixed (seeded). The table keeps
    at most ``max_entries`` codes, evicting the least recently seen. ``auto`` picks exact for Discrete or
    integer observations of at most ``exact_max_elements`` entries. Shapes: next_obs (N, ...) → (N,).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                 mode: str = "auto", hash_bits: int = 32, max_entries: int = 100_000,
                 exact_max_elements: int = 1024, seed: int = 0, normalise: str = "none", **common):
        super().__init__(observation_space, action_space, num_envs, normalise=normalise, **common)
        if mode not in MODES or not 1 <= hash_bits <= 62:
            raise ConfigError(f"counts needs mode in {list(MODES)} and 1 ≤ hash_bits ≤ 62; got {mode!r}, {hash_bits}")
        check_positive("counts", max_entries=max_entries)
        if mode == "auto":
            small_ints = (isinstance(self.space, gym.spaces.Box) and np.issubdtype(self.space.dtype, np.integer)
                          and int(np.prod(self.space.shape)) <= exact_max_elements)
            exact = not self.use_agent_features and (isinstance(self.space, gym.spaces.Discrete) or small_ints)
            mode = "exact" if exact else "simhash"
        if mode == "exact" and self.use_agent_features:
            raise ConfigError("counts mode 'exact' hashes observations; with use_agent_features use mode 'simhash'")
        self.mode, self.hash_bits, self.max_entries, self.seed = mode, hash_bits, max_entries, seed
        self.table: OrderedDict[int, int] = OrderedDict()
        self._projection: torch.Tensor | None = None

    def codes(self, obs: Obs, features: torch.Tensor | None) -> list[int]:
        """One integer code per env: the exact digest or the SimHash bit pattern."""
        if self.mode == "exact":
            rows = select_obs(obs, self.obs_key).detach().cpu().numpy()
            rows = rows.reshape(len(rows), -1) if rows.ndim > 1 else rows.reshape(-1, 1)
            return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in rows]
        x = self.inputs(obs, features).flatten(1)
        if self._projection is None or self._projection.shape[1] != x.shape[1]:
            # derived from the seed, so it needs no checkpointing and is identical across runs
            gen = torch.Generator().manual_seed(self.seed)
            self._projection = torch.randn(self.hash_bits, x.shape[1], generator=gen)
        bits = (x @ self._projection.to(x).T > 0).long().cpu()
        return (bits * (2 ** torch.arange(self.hash_bits))).sum(-1).tolist()

    def step_bonus(self, obs, actions, next_obs, dones, features):
        bonus = []
        for code in self.codes(next_obs, features):
            n = self.table.pop(code, 0) + 1
            self.table[code] = n  # re-inserted last: the table is ordered by recency for eviction
            bonus.append(n ** -0.5)
            if len(self.table) > self.max_entries:
                self.table.popitem(last=False)
        return torch.tensor(bonus, dtype=torch.float32, device=actions.device)

    def count(self, obs: Obs, features: torch.Tensor | None = None) -> list[int]:
        """Current counts n(φ(s)) of a batch of observations (N, ...), without visiting them."""
        return [self.table.get(c, 0) for c in self.codes(obs, features)]

    def memory_size(self) -> int:
        return len(self.table)

    # the table travels in the state dict as two int64 tensors (weights_only-loadable)
    def get_extra_state(self):
        keys = [k - (1 << 64) if k >= 1 << 63 else k for k in self.table]  # unsigned digests → int64
        return {"codes": torch.tensor(keys, dtype=torch.int64), "counts": torch.tensor(list(self.table.values()))}

    def set_extra_state(self, state) -> None:
        codes = [k + (1 << 64) if k < 0 else k for k in state["codes"].tolist()]
        self.table = OrderedDict(zip(codes, state["counts"].tolist()))
