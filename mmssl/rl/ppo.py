"""PPO (Schulman et al. 2017) in the shape of CleanRL's ``ppo.py``, with auxiliary objectives and intrinsic rewards.

One update, top to bottom (``PPO.update``):
  1. rollout: T steps of N envs with the current policy; truncated episodes are bootstrapped with
     ``r ← r + γ·V(final_obs)``; rewards optionally scaled by the running std of the return;
  2. intrinsic rewards: ``compute(rollout)`` → (T, N) bonus, added to the reward before GAE
     (``intrinsic_integration=add``) or given its own value head and GAE (``value_head``);
  3. GAE(γ, λ) advantages and returns;
  4. ``update_epochs`` passes over shuffled minibatches: clipped policy loss, (clipped) value loss,
     entropy bonus, plus the weighted auxiliary objectives on the same minibatch, one Adam step with
     global-norm clipping, then each objective's ``after_step`` (momentum encoders). The networks' forward
     runs in the run's ``precision`` (``mmssl.precision``: bf16 autocast where a probe of this network on a
     minibatch finds it faster); log-probabilities, values and every loss are computed in fp32. CleanRL's
     MLP agents without auxiliary objectives run this step in numpy instead (``numpy_update``: the same
     losses, gradients written out, one flat Adam; ``agent.update_engine``);
  5. intrinsic rewards ``update(rollout)`` train their own networks.
The learning rate anneals linearly to 0 over the run. ``state_dict``/``load_state_dict`` capture
everything (networks, optimiser, normalisers, RNGs, env replay snapshots), so a resumed run on CPU
continues bit-identically.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections import deque
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import mmssl_envs
from mmssl import precision
from mmssl.checkpoint import capture_rng, restore_rng
from mmssl.config import registry_kwargs
from mmssl.errors import ConfigError, NonFiniteError
from mmssl.precision import Precision, Workload, for_run, module_workload
from mmssl.registry import INTRINSIC_REWARDS
from mmssl.rl import numpy_update
from mmssl.rl.agent import Agent, scale_action
from mmssl.rl.aux import build_aux_objectives, rollout_batch
from mmssl.rl.normalize import ObsNormalizer, RewardScaler
from mmssl.rl.storage import Rollout, RolloutBuffer, flatten_obs
from mmssl.train import distributed
from mmssl.train.schedule import linear_decay

INTEGRATIONS = ("add", "value_head")


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    rewards, values, dones: (T, N) with ``dones[t] = 1`` when the episode ended at step t (so o_{t+1}
    belongs to a new episode); last_value: (N,) V(o_T). ``δ_t = r_t + γ V(o_{t+1})(1-d_t) - V(o_t)``,
    ``A_t = δ_t + γλ(1-d_t) A_{t+1}``. Returns (advantages, returns = advantages + values), both (T, N).
    """
    # the recursion runs over T small (N,) rows: numpy's per-operation cost is a fraction of torch's
    r, v, d = (x.detach().cpu().numpy().astype(np.float32) for x in (rewards, values, dones))
    next_values = np.concatenate([v[1:], last_value.detach().cpu().numpy().astype(np.float32)[None]])
    nonterminal = 1.0 - d
    deltas = r + np.float32(gamma) * next_values * nonterminal - v
    decay = np.float32(gamma * lam) * nonterminal
    adv = np.empty_like(r)
    running = np.zeros_like(r[0])
    for t in range(len(r) - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        adv[t] = running
    advantages = torch.from_numpy(adv).to(rewards.device)
    return advantages, advantages + values


def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                clip_coef: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate ``mean(max(-A·ρ, -A·clip(ρ, 1±ε)))``, ρ = exp(logπ_new - logπ_old); all (B,).

    Also returns CleanRL's diagnostics: approx_kl = mean((ρ-1) - log ρ), clipfrac = mean(|ρ-1| > ε).
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    with torch.no_grad():
        stats = {"approx_kl": ((ratio - 1) - log_ratio).mean().item(),
                 "clipfrac": ((ratio - 1).abs() > clip_coef).float().mean().item()}
    return loss, stats


def value_loss(new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip_coef: float,
               clip: bool) -> torch.Tensor:
    """``0.5·mean((V - R)²)``, or with clipping ``0.5·mean(max((V - R)², (V_old + clip(V - V_old, ±ε) - R)²))``."""
    unclipped = (new_value - returns).pow(2)
    if not clip:
        return 0.5 * unclipped.mean()
    clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped - returns).pow(2)).mean()


def normalise_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over the minibatch (B,); under torch.distributed over every rank's share."""
    from mmssl.collectives import world_size

    if world_size() == 1:
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    import torch.distributed as dist

    x = advantages.double()
    packed = torch.stack([x.new_tensor(float(len(x))), x.sum(), x.square().sum()])
    dist.all_reduce(packed)
    n, total, squares = packed
    mean = total / n
    std = ((squares - n * mean.square()) / (n - 1)).clamp_min(0).sqrt()  # unbiased, as torch.std
    return ((x - mean) / (std + 1e-8)).to(advantages.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = returns.var()
    return float("nan") if var == 0 else (1 - (returns - values).var() / var).item()


def to_tensor(obs) -> torch.Tensor | dict[str, torch.Tensor]:
    """Env observations (numpy, batched) → torch tensors with their dtype (uint8 stays uint8)."""
    if isinstance(obs, dict):
        return {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs))


class _Where:
    """Where in a rollout a step is, as ``check_finite`` names it: formatted only when there is an error."""

    __slots__ = ("step", "update", "t", "steps")

    def __init__(self, step: int, update: int, t: int, steps: int):
        self.step, self.update, self.t, self.steps = step, update, t, steps

    def __str__(self) -> str:
        return f"env step {self.step} (update {self.update}, rollout step {self.t}/{self.steps})"


def check_finite(values, what: str, where, envs: np.ndarray | None = None) -> None:
    """Raise ``NonFiniteError`` naming ``what``, the env indices and ``where`` (a string, or an object whose
    ``str`` is one) when a float array of ``values`` (N, ...) — or a dict of them — holds a NaN or Inf;
    ``envs`` maps rows to env indices."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            check_finite(value, f"{what}[{key!r}]", where, envs)
        return
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
    index = [int(envs[r]) if envs is not None else int(r) for r in rows]
    raise NonFiniteError(f"non-finite {what} from env {', '.join(map(str, index))} at {where}; the update was stopped, "
                         "no checkpoint written; check the environment (its observations and rewards)")


def index_obs(obs, idx):
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]


def stack_obs(items: list):
    if isinstance(items[0], dict):
        return {k: torch.stack([o[k] for o in items]) for k in items[0]}
    return torch.stack(items)


def intrinsic_specs(node) -> list[dict]:
    """``intrinsic:`` as a list of ``{name, ...}`` (a list, or a dict slot → spec)."""
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not node:
        return []
    items = node.values() if isinstance(node, dict) and "name" not in node else ([node] if isinstance(node, dict) else node)
    specs = []
    for item in items:
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"each intrinsic entry needs a 'name' (`mmssl list intrinsic_rewards`), got {item!r}")
        specs.append(dict(item))
    return specs


class Learner(nn.Module):
    """Agent plus auxiliary objectives as one module: what DistributedDataParallel wraps for multi-rank PPO.

    ``forward(obs, actions, aux_batch)`` → (``Agent.evaluate`` of the minibatch, {slot: ObjectiveOutput}
    of the auxiliary objectives on ``aux_batch``, empty when None); the losses are assembled by ``PPO``.
    """

    def __init__(self, agent: Agent, aux: nn.ModuleDict):
        super().__init__()
        self.agent, self.aux = agent, aux

    def forward(self, obs, actions: torch.Tensor, aux_batch=None):
        evaluation = self.agent.evaluate(obs, actions)
        outputs = {slot: objective(aux_batch, self.agent.encoders) for slot, objective in self.aux.items()} \
            if aux_batch is not None else {}
        return evaluation, outputs


class PPO:
    """Owns envs, agent, auxiliary objectives, intrinsic rewards and the optimiser of one PPO run.

    ``device`` (auto | cpu | cuda[:N]) holds the agent, auxiliary objectives, intrinsic rewards, the
    normalisers and the rollout buffers; only env observations (in) and actions (out) cross to the host.
    Under torchrun (DD-PPO, Wijmans et al. 2020) each rank steps its own ``agent.num_envs`` envs, seeded
    ``seed + rank·num_envs + i``, and the gradients are averaged through DistributedDataParallel; a run
    of W ranks sees W·num_envs envs.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg, a = cfg, cfg.agent
        self.num_envs, self.num_steps = int(a.num_envs), int(a.num_steps)
        if min(self.num_envs, self.num_steps, int(a.num_minibatches)) < 1:
            raise ConfigError(f"agent.num_envs, agent.num_steps and agent.num_minibatches must be ≥ 1, got "
                              f"{self.num_envs}, {self.num_steps}, {a.num_minibatches}")
        self.batch_size = self.num_envs * self.num_steps
        self.minibatch_size = self.batch_size // int(a.num_minibatches)
        if self.batch_size % int(a.num_minibatches):
            raise ConfigError(f"agent.num_minibatches={a.num_minibatches} does not split the batch of {self.batch_size} "
                              f"(agent.num_envs={self.num_envs} × agent.num_steps={self.num_steps}) into equal minibatches; "
                              f"pick a divisor of {self.batch_size}")
        if self.minibatch_size < 2:  # advantage normalisation and the losses' means need at least two samples
            raise ConfigError(f"agent.num_minibatches={a.num_minibatches} gives minibatches of {self.minibatch_size} from "
                              f"a batch of {self.batch_size} (agent.num_envs={self.num_envs} × agent.num_steps="
                              f"{self.num_steps}); use at most {self.batch_size // 2} minibatches")
        from mmssl.train.trainer import resolve_device

        self.device = resolve_device(str(cfg.get("device", "cpu")))
        self.rank, self.world = distributed.init_from_env(self.device)
        self.num_updates = max(1, int(a.total_timesteps) // (self.batch_size * self.world))
        torch.manual_seed(int(cfg.seed))
        np.random.seed(int(cfg.seed))
        env_seed = int(cfg.seed) + self.rank * self.num_envs  # distinct envs per rank
        self.envs = mmssl_envs.make_vector(cfg.env, self.num_envs, env_seed, bool(cfg.env.get("asynchronous", False)))
        self.obs_space, self.action_space = self.envs.single_observation_space, self.envs.single_action_space
        self.integration = str(cfg.get("intrinsic_integration", "add"))
        if self.integration not in INTEGRATIONS:
            raise ConfigError(f"intrinsic_integration must be one of {list(INTEGRATIONS)}, got {self.integration!r}")
        specs = intrinsic_specs(cfg.get("intrinsic"))
        self.agent = Agent(self.obs_space, self.action_space, registry_kwargs(cfg.agent_encoder, drop=()),
                           separate_critic=bool(a.separate_critic), head_hidden=int(a.head_hidden),
                           encoder_checkpoint=a.encoder_checkpoint, checkpoint_modality=str(a.checkpoint_modality),
                           freeze_encoder=bool(a.freeze_encoder),
                           intrinsic_value_head=bool(specs) and self.integration == "value_head")
        self.aux, self.aux_weights = build_aux_objectives(cfg.get("objective"), self.agent.encoders, self.obs_space,
                                                          self.action_space)
        self.intrinsic = nn.ModuleDict({
            spec.get("slot", spec["name"]): INTRINSIC_REWARDS.build(
                spec["name"], self.obs_space, self.action_space, self.num_envs,
                **{k: v for k, v in spec.items() if k not in ("name", "slot")})
            for spec in specs})
        vector_obs = isinstance(self.obs_space, gym.spaces.Box) and len(self.obs_space.shape) == 1
        if a.normalize_obs and not vector_obs:
            raise ConfigError(f"agent.normalize_obs applies to vector observations, not {self.obs_space}; set it false")
        self.obs_norm = ObsNormalizer(tuple(self.obs_space.shape or ()), bool(a.normalize_obs))
        self.reward_scaler = RewardScaler(self.num_envs, float(a.gamma), bool(a.normalize_reward))
        for stats in (self.obs_norm.stats, self.reward_scaler.stats):
            stats.sync_ranks = self.world > 1  # one set of statistics over every rank's envs
        for module in (self.agent, self.aux, self.intrinsic, self.obs_norm, self.reward_scaler):
            module.to(self.device)  # in place: optimisers built on these parameters stay valid
        self.learner = distributed.wrap(Learner(self.agent, self.aux), self.device, "ddp")
        if self.rank:
            torch.manual_seed(int(cfg.seed) + 100_003 * self.rank)  # each rank its own action-sampling stream
        params = [p for p in [*self.agent.parameters(), *self.aux.parameters()] if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=float(a.learning_rate), eps=1e-5, foreach=True)
        self.params = params
        self.update_index, self.global_step = 0, 0
        self.recent_returns: deque = deque(maxlen=100)
        self.recent_success: deque = deque(maxlen=100)
        obs, _ = self.envs.reset(seed=env_seed)
        self.next_obs = self.prepare(self.to_device(to_tensor(obs)))
        self.precision, self.mlp_update = self._choose_engine(str(a.get("update_engine", "auto")),
                                                              str(cfg.get("precision", "auto")))
        self.scaler = self.precision.grad_scaler(self.device)

    def _choose_engine(self, engine: str, value: str) -> tuple[Precision, numpy_update.MLPUpdate | None]:
        """The update's precision and, for CleanRL's MLP agents, its numpy engine (``numpy_update``).

        ``agent.update_engine``: auto (numpy where the agent fits it, else autograd) | numpy (refused with
        the reason when it does not fit) | torch. Under the numpy engine ``precision=auto`` is fp32 without
        a probe (the engine computes in fp32); elsewhere — or when a resumed run recorded its precision,
        or MMSSL_AUTO_PRECISION says what auto is — it is resolved as everywhere (``for_run``).
        """
        if engine not in numpy_update.ENGINES:
            raise ConfigError(f"agent.update_engine must be one of {list(numpy_update.ENGINES)}, got {engine!r}")
        def refuse_numpy(reason: str | None) -> None:
            if engine == "numpy" and reason:
                raise ConfigError(f"agent.update_engine=numpy cannot run this agent: {reason}; "
                                  "use agent.update_engine=auto")

        resume, run_dir = bool(self.cfg.get("resume", False)), self.cfg.get("run_dir")
        reason = numpy_update.unsupported(self, value) if engine != "torch" else "agent.update_engine=torch"
        refuse_numpy(reason)  # before any probe
        recorded = resume and run_dir is not None and precision.read_record(run_dir) is not None
        if reason is None and value == "auto" and not recorded and not os.environ.get("MMSSL_AUTO_PRECISION"):
            chosen = Precision("fp32", False, "numpy update engine")
        else:  # after the first observations (the probe's minibatch is made of them); the probe forks the RNG
            chosen = for_run(value, self.device, run_dir, resume, self._update_workload(), key="precision")
            reason = reason or numpy_update.unsupported(self, chosen.name)
            refuse_numpy(reason)
        return chosen, (numpy_update.MLPUpdate(self.agent, self.optimizer) if reason is None else None)

    def _update_workload(self) -> Workload:
        """The probe of ``precision=auto``: forward+backward of (a copy of) this agent on one minibatch of the
        first observations — small MLPs are fastest in fp32, CNNs on a bf16 CPU may not be."""
        shapes = {k: tuple(v.shape[1:]) for k, v in self.next_obs.items()} if isinstance(self.next_obs, dict) \
            else tuple(self.next_obs.shape[1:])
        signature = f"{self.agent!r}|{shapes}|{self.minibatch_size}"
        name = f"ppo-{hashlib.sha256(signature.encode()).hexdigest()[:12]}-b{self.minibatch_size}"

        def make():
            agent = copy.deepcopy(self.agent).train()
            obs = index_obs(self.next_obs, torch.arange(self.minibatch_size, device=self.device) % self.num_envs)
            with torch.no_grad():
                actions = agent.act(obs).action

            def loss(module: nn.Module, _to_format) -> torch.Tensor:  # PPO keeps its memory format
                new = module.evaluate(obs, actions)
                return new.value.float().square().mean() - new.logprob.float().mean() - new.entropy.float().mean()

            return agent, loss

        return module_workload(name, make, self.device)

    # -- observations ------------------------------------------------------------------------------
    def prepare(self, obs, update_stats: bool = True):
        """Raw env observations → what the agent reads (normalised vectors; pixels and ids unchanged)."""
        return self.obs_norm(obs, update=update_stats) if self.obs_norm.enabled else obs

    # -- one PPO update ---------------------------------------------------------------------------
    def update(self) -> dict:
        """One PPO update: collect a rollout (1-3), optimise on it (4), train the intrinsic rewards (5)."""
        a = self.cfg.agent
        start = time.perf_counter()
        if a.anneal_lr:  # CleanRL: linear decay to 0 over the run
            self.optimizer.param_groups[0]["lr"] = linear_decay(self.num_updates)(self.update_index) * float(a.learning_rate)
        data = self.collect()
        stats = self.optimise(data)

        # 5. intrinsic rewards learn -----------------------------------------------------------------
        rollout = data["rollout"]
        intrinsic_metrics = {}
        for slot, reward_fn in self.intrinsic.items():
            intrinsic_metrics |= {f"intrinsic/{slot}/{k}": v for k, v in reward_fn.update(rollout).items()}
        if self.world > 1:  # each rank trained its rewards on its own envs: keep one set of weights
            distributed.average_parameters(self.intrinsic)

        self.update_index += 1
        episodes = data["episodes"]
        for ret, _length, success, _cells in episodes:
            self.recent_returns.append(ret)
            self.recent_success.append(success)
        elapsed = time.perf_counter() - start
        metrics = {k: float(np.mean(v)) for k, v in stats.items()}
        metrics |= intrinsic_metrics | {
            "global_step": self.global_step, "update": self.update_index,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "explained_variance": explained_variance(data["values"].flatten(), data["returns"].flatten()),
            "steps_per_second": self.batch_size * self.world / elapsed,
            "bonus_mean": data["bonus"].mean().item(),
        }
        if episodes:
            metrics |= {"episodic_return": float(np.mean([e[0] for e in episodes])),
                        "episodic_length": float(np.mean([e[1] for e in episodes])),
                        "success_rate": float(np.mean([e[2] for e in episodes])),
                        "episodes": len(episodes)}
            cells = [e[3] for e in episodes if e[3] is not None]
            if cells:  # grid worlds: distinct cells visited per episode (envs.wrappers.Coverage)
                metrics["episodic_cells"] = float(np.mean(cells))
        return metrics

    def collect(self) -> dict:
        """Steps 1-3: a (T, N) rollout of this rank's envs with intrinsic bonus, advantages and returns.

        Returns ``rollout`` (``Rollout``, on the device), ``logprobs``, ``values``, ``values_int``,
        ``advantages``, ``returns``, ``returns_int`` (each (T, N) or None), ``bonus`` (T, N) and the
        finished ``episodes``.
        """
        a, T, N, device = self.cfg.agent, self.num_steps, self.num_envs, self.device
        gamma, lam = float(a.gamma), float(a.gae_lambda)

        # 1. rollout ---------------------------------------------------------------------------------
        buffer = RolloutBuffer(T, N, device)  # (T, N, ...) tensors on the device, written in place
        next_feature_fixups: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        episodes: list[tuple[float, float, float, float | None]] = []
        self.agent.eval()
        space, intrinsic = self.action_space, list(self.intrinsic.values())
        with torch.no_grad():
            act = self.agent.rollout_act(self.next_obs, T)  # the weights are fixed for the rollout: path chosen once
            for t in range(T):
                obs = self.next_obs
                step = act(obs)
                raw_next, reward, terminated, truncated, infos = self.envs.step(
                    scale_action(step.action.numpy(force=True), space))
                self.global_step += N * self.world
                where = _Where(self.global_step, self.update_index + 1, t + 1, T)  # formatted only for an error
                check_finite(raw_next, "observation", where)
                check_finite(reward, "reward", where)
                done = terminated | truncated
                done_t = self.to_device(torch.from_numpy(done.astype(np.float32)))
                next_obs = self.prepare(self.to_device(to_tensor(raw_next)))  # the one host → device copy of the step
                real_next = next_obs if not isinstance(next_obs, dict) else dict(next_obs)
                reward = self.to_device(torch.from_numpy(np.asarray(reward, dtype=np.float32)))
                if self.reward_scaler.enabled:
                    reward = self.reward_scaler(reward, done_t)
                if done.any():
                    idx = np.flatnonzero(done)
                    real_next, idx_t, final_features = self._episode_ends(idx, infos, terminated, truncated, real_next,
                                                                          reward, gamma, where)
                    episodes += _finished_episodes(infos["final_info"], idx)
                    next_feature_fixups.append((t, idx_t, final_features))
                for reward_fn in intrinsic:
                    reward_fn.watch(obs, step.action, real_next, done_t)
                buffer.put(t, obs=obs, next_obs=real_next, actions=step.action, logprobs=step.logprob, values=step.value,
                           values_int=step.value_int, rewards=reward, dones=done_t, features=step.features)
                self.next_obs = next_obs
            last_features, last_value, last_value_int = self.agent.bootstrap(self.next_obs)

        features = buffer["features"]  # (T, N, D)
        next_features = torch.cat([features[1:], last_features[None]])
        for t, idx_t, final_features in next_feature_fixups:
            next_features[t, idx_t] = final_features
        rollout = Rollout(obs=buffer["obs"], next_obs=buffer["next_obs"], actions=buffer["actions"],
                          rewards=buffer["rewards"], dones=buffer["dones"], features=features,
                          next_features=next_features)
        values, logprobs = buffer["values"], buffer["logprobs"]

        # 2. intrinsic rewards -----------------------------------------------------------------------
        bonus = torch.zeros_like(rollout.rewards)
        for slot, reward_fn in self.intrinsic.items():
            term = reward_fn.compute(rollout)
            if not torch.isfinite(term).all():
                bad = torch.nonzero(~torch.isfinite(term))[0].tolist()
                raise NonFiniteError(f"non-finite intrinsic reward {slot!r} at rollout step {bad[0] + 1}, env {bad[1]} "
                                     f"(update {self.update_index + 1}); the update was stopped, no checkpoint written")
            bonus += term

        # 3. advantages ------------------------------------------------------------------------------
        if self.integration == "add":
            advantages, returns = gae(rollout.rewards + bonus, values, rollout.dones, last_value, gamma, lam)
            returns_int = values_int = None
        else:  # RND-style: a non-episodic intrinsic return with its own head, advantages mixed
            advantages, returns = gae(rollout.rewards, values, rollout.dones, last_value, gamma, lam)
            values_int = buffer["values_int"]
            adv_int, returns_int = gae(bonus, values_int, torch.zeros_like(bonus), last_value_int,
                                       float(a.intrinsic_gamma), lam)
            advantages = float(a.extrinsic_coef) * advantages + float(a.intrinsic_coef) * adv_int
        return {"rollout": rollout, "logprobs": logprobs, "values": values, "values_int": values_int,
                "advantages": advantages, "returns": returns, "returns_int": returns_int, "bonus": bonus,
                "episodes": episodes}

    def _episode_ends(self, idx: np.ndarray, infos: dict, terminated: np.ndarray, truncated: np.ndarray, real_next,
                      reward: torch.Tensor, gamma: float, where):
        """Envs ``idx`` ended an episode this step: their true final observations go into ``real_next`` (a
        copy) and time-limit truncations are bootstrapped in ``reward`` (in place) with ``γ·V(final_obs)``.
        Returns (real_next, idx as a tensor, the final observations' features)."""
        final_raw = _stack_final(infos["final_obs"], idx)
        check_finite(final_raw, "final observation", where, envs=idx)
        final = self.prepare(self.to_device(to_tensor(final_raw)), update_stats=False)
        idx_t = torch.from_numpy(idx).to(self.device)
        if isinstance(real_next, dict):
            real_next = {k: v.clone() for k, v in real_next.items()}
            for k in real_next:
                real_next[k][idx_t] = final[k]
        else:
            real_next = real_next.clone()
            real_next[idx_t] = final
        final_features, final_value, _ = self.agent.bootstrap(final)
        trunc = torch.as_tensor(truncated[idx] & ~terminated[idx], dtype=torch.float32, device=self.device)
        reward[idx_t] += gamma * final_value * trunc
        return real_next, idx_t, final_features

    def optimise(self, data: dict, orders: list[list[torch.Tensor]] | None = None) -> dict[str, list[float]]:
        """Step 4: ``update_epochs`` passes of clipped policy, value, entropy and auxiliary losses over minibatches.

        ``orders`` (one list of minibatch index tensors per epoch) replaces the shuffled minibatches —
        the two-rank test gives each rank its own and one process their union. Under torchrun the
        forward runs through DistributedDataParallel, which averages the gradients over ranks (DD-PPO:
        each rank's minibatch is its share of one global minibatch); advantages are normalised over the
        global minibatch. Returns the per-minibatch statistics.
        """
        a = self.cfg.agent
        clip, clip_v, ent_coef, vf_coef = float(a.clip_coef), bool(a.clip_vloss), float(a.ent_coef), float(a.vf_coef)
        norm_adv, max_norm = bool(a.norm_adv), float(a.max_grad_norm)  # plain values: no config lookups per minibatch
        if self.mlp_update is not None:
            hp = {"lr": self.optimizer.param_groups[0]["lr"], "clip": clip, "clip_vloss": clip_v, "ent_coef": ent_coef,
                  "vf_coef": vf_coef, "norm_adv": norm_adv, "max_grad_norm": max_norm}
            return self._optimise_numpy(data, orders, hp)
        rollout, returns_int, values_int = data["rollout"], data["returns_int"], data["values_int"]
        b_obs, b_next = flatten_obs(rollout.obs), flatten_obs(rollout.next_obs)
        b_actions, b_dones = rollout.actions.flatten(0, 1), rollout.dones.flatten(0, 1)
        b_logprobs, b_adv = data["logprobs"].flatten(), data["advantages"].flatten()
        b_returns, b_values = data["returns"].flatten(), data["values"].flatten()
        self.agent.train()
        self.aux.train()
        stats: dict[str, list[float]] = {}
        for epoch in range(int(a.update_epochs)):
            minibatches = orders[epoch] if orders is not None else torch.randperm(self.batch_size).split(self.minibatch_size)
            for index, mb in enumerate(minibatches):
                where = f"update {self.update_index + 1} (epoch {epoch + 1}, minibatch {index + 1})"
                mb = mb.to(self.device)
                batch = rollout_batch(index_obs(b_obs, mb), index_obs(b_next, mb), b_actions[mb], b_dones[mb]) \
                    if self.aux else None
                with self.precision.autocast(self.device):
                    new, aux_out = self.learner(index_obs(b_obs, mb), b_actions[mb], batch)
                mb_adv = normalise_advantages(b_adv[mb]) if norm_adv else b_adv[mb]
                pg_loss, pg_stats = policy_loss(new.logprob.float(), b_logprobs[mb], mb_adv, clip)
                v_loss = value_loss(new.value.float(), b_values[mb], b_returns[mb], clip, clip_v)
                if returns_int is not None:
                    v_loss = v_loss + value_loss(new.value_int.float(), values_int.flatten()[mb],
                                                 returns_int.flatten()[mb], clip, clip_v)
                entropy = new.entropy.float().mean()
                loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
                terms = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}
                for slot, out in aux_out.items():
                    loss = loss + self.aux_weights[slot] * out.loss.float()
                    terms[f"aux/{slot}/loss"] = out.loss
                    _add(stats, {f"aux/{slot}/loss": out.loss.item(),
                                 **{f"aux/{slot}/{k}": v for k, v in out.metrics.items()}})
                if not torch.isfinite(loss):
                    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["the weighted sum"]
                    raise NonFiniteError(f"non-finite loss ({', '.join(bad)}) at {where}; the update was stopped before "
                                         "the optimiser step, no checkpoint written; lower agent.learning_rate or check "
                                         "the rewards")
                grad_norm = self._step(loss, max_norm, where)
                progress = (self.update_index + 1) / self.num_updates
                for objective in self.aux.values():
                    objective.after_step(self.agent.encoders, progress)
                _add(stats, {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
                             "grad_norm": grad_norm.item(), **pg_stats})
            if a.target_kl is not None and _mean_over_ranks(stats["approx_kl"][-1], self.world) > float(a.target_kl):
                break  # CleanRL's early stop on the last minibatch's KL estimate (every rank decides alike)
        return stats

    def _optimise_numpy(self, data: dict, orders: list[list[torch.Tensor]] | None, hp: dict) -> dict[str, list[float]]:
        """Step 4 through ``numpy_update.MLPUpdate``: the same minibatches (the same ``randperm`` draws), losses
        and statistics as the autograd path."""
        a, rollout = self.cfg.agent, data["rollout"]
        batch = {"obs": flatten_obs(rollout.obs), "actions": rollout.actions.flatten(0, 1),
                 "logprobs": data["logprobs"].flatten(), "advantages": data["advantages"].flatten(),
                 "returns": data["returns"].flatten(), "values": data["values"].flatten()}
        batch = {k: v.detach().numpy() for k, v in batch.items()}

        def order(epoch: int) -> list[np.ndarray]:
            minibatches = orders[epoch] if orders is not None else torch.randperm(self.batch_size).split(self.minibatch_size)
            return [mb.numpy() for mb in minibatches]

        def where(epoch: int, index: int) -> str:
            return f"update {self.update_index + 1} (epoch {epoch + 1}, minibatch {index + 1})"

        self.agent.train()
        target_kl = None if a.target_kl is None else float(a.target_kl)
        return self.mlp_update.optimise(batch, order, int(a.update_epochs), hp, where, target_kl)

    def _step(self, loss: torch.Tensor, max_norm: float, where: str) -> torch.Tensor:
        """Backward, global-norm clipping, Adam step (fp16: through the loss scaler); returns the grad norm."""
        self.optimizer.zero_grad(set_to_none=True)
        # under torchrun: DDP all-reduces (averages) gradients during backward
        precision.backward(loss, self.optimizer, self.scaler)
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)
        # with fp16's scaler an overflow is not an error: the scaler skips this step and halves its scale
        if self.scaler is None and not torch.isfinite(grad_norm):
            raise NonFiniteError(f"non-finite gradient in {', '.join(self._nonfinite_grads()[:3])} at {where}; "
                                 "the update was stopped before the optimiser step, no checkpoint written; "
                                 "lower agent.learning_rate or agent.max_grad_norm")
        precision.optimizer_step(self.optimizer, self.scaler)
        return grad_norm

    def to_device(self, obs):
        """Observations (a tensor or a dict of them) → the agent's device (a no-op on CPU)."""
        if self.device.type == "cpu":  # rollouts call this 3 times per env step
            return obs
        if isinstance(obs, dict):
            return {k: v.to(self.device, non_blocking=True) for k, v in obs.items()}
        return obs.to(self.device, non_blocking=True)

    def _nonfinite_grads(self) -> list[str]:
        """Names of the parameters whose gradient holds a NaN or Inf."""
        named = [*self.agent.named_parameters(), *((f"aux.{n}", p) for n, p in self.aux.named_parameters())]
        return [name for name, p in named if p.grad is not None and not torch.isfinite(p.grad).all()] or ["(unknown)"]

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "agent": self.agent.state_dict(), "aux": self.aux.state_dict(), "intrinsic": self.intrinsic.state_dict(),
            "obs_norm": self.obs_norm.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": capture_rng(),
            "update_index": self.update_index, "global_step": self.global_step,
            "recent_returns": list(self.recent_returns), "recent_success": list(self.recent_success),
            "envs": mmssl_envs.snapshot_vector(self.envs), "next_obs": _to_cpu(self.next_obs),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "aux_momentum": {slot: float(getattr(o, "momentum", 0.0)) for slot, o in self.aux.items()},
            # intrinsic rewards train with their own optimisers, which are not part of their state_dict
            "intrinsic_optimizers": {slot: r.optimizer.state_dict() for slot, r in self.intrinsic.items()
                                     if getattr(r, "optimizer", None) is not None},
        }

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.aux.load_state_dict(state["aux"])
        self.intrinsic.load_state_dict(state["intrinsic"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("grad_scaler") is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.update_index, self.global_step = int(state["update_index"]), int(state["global_step"])
        self.recent_returns.extend(state["recent_returns"])
        self.recent_success.extend(state["recent_success"])
        for slot, momentum in state.get("aux_momentum", {}).items():
            if hasattr(self.aux[slot], "momentum"):
                self.aux[slot].momentum = momentum
        for slot, optim_state in state.get("intrinsic_optimizers", {}).items():
            self.intrinsic[slot].optimizer.load_state_dict(optim_state)
        mmssl_envs.restore_vector(self.envs, state["envs"])
        self.next_obs = self.to_device(state["next_obs"])
        restore_rng(state["rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def close(self) -> None:
        self.envs.close()


def _to_cpu(obs):
    return {k: v.cpu() for k, v in obs.items()} if isinstance(obs, dict) else obs.cpu()


def _mean_over_ranks(value: float, world: int) -> float:
    return value if world == 1 else float(distributed.mean_over_ranks(torch.tensor(value, dtype=torch.float64)))


def _stack_final(final_obs, idx: np.ndarray):
    """``infos["final_obs"]`` (an object array, or a dict of them) at env indices ``idx`` → a batched array."""
    if isinstance(final_obs, dict):
        return {k: np.stack([v[i] for i in idx]) for k, v in final_obs.items()}
    if len(idx) and isinstance(final_obs[idx[0]], dict):  # Dict spaces: an object array of per-env dicts
        return {k: np.stack([final_obs[i][k] for i in idx]) for k in final_obs[idx[0]]}
    return np.stack([final_obs[i] for i in idx])


def _finished_episodes(final_info: dict, idx: np.ndarray) -> list[tuple[float, float, float, float | None]]:
    """(return, length, success, cells visited or None) of the episodes that ended at env indices ``idx``."""
    episode, success, cells = final_info["episode"], final_info.get("success"), final_info.get("cells_visited")
    return [(float(episode["r"][i]), float(episode["l"][i]), float(success[i]) if success is not None else 0.0,
             float(cells[i]) if cells is not None else None) for i in idx]


def _add(stats: dict[str, list[float]], values: dict[str, float]) -> None:
    for k, v in values.items():
        stats.setdefault(k, []).append(float(v))
