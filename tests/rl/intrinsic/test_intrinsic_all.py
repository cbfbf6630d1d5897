"""Every registered reward: output contract on vector, pixel and MiniGrid-like observations."""

import pytest
import torch

from mmssl.errors import ConfigError
from mmssl.registry import INTRINSIC_REWARDS

from .conftest import ACTIONS, SPACES, make_rollout, step

GENERIC = ["counts", "disagreement", "e3b", "icm", "ngu", "re3", "rnd"]
TINY = {"embed_dim": 8, "batch_size": 8}


def build(name, space, num_envs=2, **cfg):
    return INTRINSIC_REWARDS.build(name, space, ACTIONS, num_envs, **{**TINY, **cfg})


@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("agent_features", [False, True])
def test_contract_shape_dtype_finite(name, agent_features, space_name):
    space = SPACES[space_name]
    reward = build(name, space, use_agent_features=agent_features, coef=0.5)
    for seed in range(2):  # two rollouts: statistics, memories and counts carry over
        rollout = make_rollout(space, seed=seed, done_every=4)
        for t in range(rollout.shape[0]):
            reward.watch(*step(rollout, t))
        bonus = reward.compute(rollout)
        assert bonus.shape == (6, 2) and bonus.dtype == torch.float32
        assert torch.isfinite(bonus).all() and (bonus >= 0).all()
        metrics = reward.update(rollout)
    assert metrics["coef"] == 0.5 and all(isinstance(v, float) for v in metrics.values())
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert bonus.abs().sum() > 0


@pytest.mark.parametrize("name", ["counts", "e3b", "ngu"])
@pytest.mark.parametrize("agent_features", [False, True])
def test_watch_and_replay_agree(name, agent_features):
    """Step-wise rewards give the same bonus whether the loop watched each step or not — also when the
    loop watches without features (PPO does) and agent features must come from the rollout."""
    space = SPACES["minigrid"]
    torch.manual_seed(0)
    watched = build(name, space, use_agent_features=agent_features)
    torch.manual_seed(0)
    replayed = build(name, space, use_agent_features=agent_features)
    rollout = make_rollout(space, T=8, done_every=3)
    for t in range(8):
        watched.watch(*step(rollout, t)[:4])  # no features
    torch.manual_seed(1)  # lazy layers (agent-feature inputs) initialise on first use, from the global RNG
    bonus = watched.compute(rollout)
    torch.manual_seed(1)
    torch.testing.assert_close(bonus, replayed.compute(rollout))
    assert bonus.abs().sum() > 0


def test_partial_watching_is_an_error():
    reward = build("counts", SPACES["vector"])
    rollout = make_rollout(SPACES["vector"])
    reward.watch(*step(rollout, 0))
    with pytest.raises(ConfigError, match="watched 1 steps"):
        reward.compute(rollout)


def test_coef_decays_per_update():
    reward = build("re3", SPACES["vector"], coef=1.0, coef_decay=0.5, normalise="none")
    rollout = make_rollout(SPACES["vector"])
    first = reward.compute(rollout)
    reward.update(rollout)
    torch.testing.assert_close(reward.compute(rollout), first * 0.5)


def test_return_normalisation_uses_discounted_intrinsic_return():
    reward = build("re3", SPACES["vector"], coef=1.0, normalise="return", gamma=0.5)
    rollout = make_rollout(SPACES["vector"], T=5)
    raw = reward.batch_bonus(rollout)
    bonus = reward.compute(rollout)
    returns, r = [], torch.zeros(2, dtype=torch.float64)
    for t in range(5):
        r = 0.5 * r + raw[t].double()
        returns.append(r)
    std = torch.stack(returns).std(unbiased=False)  # first update: the prior count is negligible
    torch.testing.assert_close(bonus, (raw / std).float(), rtol=1e-3, atol=1e-5)


def test_build_rejects_unknown_and_bad_options():
    with pytest.raises(ConfigError, match="did you mean 'coef_decay'"):
        build("rnd", SPACES["vector"], coef_decy=0.9)
    with pytest.raises(ConfigError, match="normalise must be one of"):
        build("icm", SPACES["vector"], normalise="zscore")
    with pytest.raises(ConfigError, match="use_agent_features=true but the rollout carries no features"):
        reward = build("rnd", SPACES["vector"], use_agent_features=True)
        rollout = make_rollout(SPACES["vector"])
        rollout.next_features = None
        reward.compute(rollout)


@pytest.mark.parametrize("name", [*GENERIC, "mix"])
def test_registry_reads_the_real_signature(name):
    """The registry reads each reward's own signature, base options included through ``**common``: the
    defaults it reports (and the generated configs hold) are the ones the built reward uses."""
    import inspect

    from mmssl.config import constructor_defaults

    cls = INTRINSIC_REWARDS.get(name).obj
    assert "__signature__" not in vars(cls.__init__)
    defaults = {p.name: p.default for p in INTRINSIC_REWARDS.parameters(name)}
    assert {"coef", "coef_decay", "normalise", "embed_dim", "obs_key", "batch_size"} <= set(defaults)
    extra = {"rewards": {"rnd": {"weight": 1.0}}} if name == "mix" else {}
    reward = INTRINSIC_REWARDS.build(name, SPACES["vector"], ACTIONS, 2, **extra)
    assert (reward.coef.item(), reward.normalise_mode, reward.embed_dim, reward.batch_size) == pytest.approx(
        (defaults["coef"], defaults["normalise"], defaults["embed_dim"], defaults["batch_size"]))
    assert constructor_defaults(cls)["normalise"] == defaults["normalise"]
    assert inspect.signature(cls.__init__).parameters.keys() <= {*defaults, "self", "common"}


def test_rewards_declare_their_own_defaults():
    defaults = {name: {p.name: p.default for p in INTRINSIC_REWARDS.parameters(name)} for name in INTRINSIC_REWARDS.names()}
    assert defaults["rnd"]["normalise"] == "return" and defaults["icm"]["normalise"] == "rms"
    assert (defaults["mix"]["coef"], defaults["mix"]["normalise"]) == (1.0, "none")
    assert (defaults["goal_similarity"]["coef"], defaults["counts"]["normalise"]) == (0.1, "none")


def test_base_options_are_checked_by_name_and_type():
    with pytest.raises(ConfigError, match=r"intrinsic reward 'icm' has no option 'embd_dim' \(did you mean 'embed_dim'\?\)"):
        build("icm", SPACES["vector"], embd_dim=8)
    with pytest.raises(ConfigError, match=r"intrinsic reward 'e3b' option 'lr' must be float, got 'fast'"):
        build("e3b", SPACES["vector"], lr="fast")
    with pytest.raises(ConfigError, match=r"intrinsic reward 'mix' has no option 'normalize' \(did you mean 'normalise'\?\)"):
        INTRINSIC_REWARDS.build("mix", SPACES["vector"], ACTIONS, 2, normalize="none", rewards={"rnd": {}})


def test_state_dict_round_trip_gives_identical_bonus():
    space = SPACES["pixels"]
    rollout = make_rollout(space)
    a = build("rnd", space)
    a.compute(rollout)
    a.update(rollout)
    b = build("rnd", space)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.compute(rollout), b.compute(rollout))


def test_every_config_in_configs_intrinsic_builds():
    from omegaconf import OmegaConf

    from mmssl.config import config_dir, registry_kwargs

    files = sorted((config_dir() / "intrinsic").glob("*.yaml"))
    assert {f.stem for f in files} >= set(GENERIC) | {"mix", "goal_similarity"}
    for file in files:
        cfg = OmegaConf.load(file)
        # a reward's own config is named after it; a preset of several (re3_counts) is a 'mix' under its own name
        assert cfg.name == file.stem or (file.stem not in INTRINSIC_REWARDS and cfg.name == "mix"), file.name
        if cfg.name == "goal_similarity":  # needs a pretraining checkpoint; without one it says so
            with pytest.raises(ConfigError, match="needs exactly one of checkpoint"):
                INTRINSIC_REWARDS.build(cfg.name, SPACES["minigrid"], ACTIONS, 2, **registry_kwargs(cfg))
            continue
        reward = INTRINSIC_REWARDS.build(cfg.name, SPACES["minigrid"], ACTIONS, 2, **registry_kwargs(cfg))
        assert reward.coef.item() == cfg.coef


def test_rms_normalisation_keeps_a_barely_varying_bonus_at_unit_scale():
    # a bonus of 5 ± 0.01: dividing by the std alone gives ~500, by the RMS ~1
    bonus = 5.0 + 0.01 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    rms = build("re3", SPACES["vector"], coef=1.0, normalise="rms")
    std = build("re3", SPACES["vector"], coef=1.0, normalise="std")
    assert rms.normalise(bonus).mean().item() == pytest.approx(1.0, abs=0.01)
    assert std.normalise(bonus).mean().item() > 100
