"""Every numeric config key has a range (mmssl/constraints.py), and a value outside it is one line quoting
the override that set it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmssl import constraints
from mmssl.cli import main
from mmssl.config import compose, config_dir
from tests.conftest import tiny_overrides


def numeric_keys() -> list[tuple[str, str, object]]:
    """(file, dotted key as composed, value) of every number (and list of numbers) in every config file."""
    found = []
    root = config_dir()
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if rel.parts[0] == "sweep":  # wandb sweep specs, not mmssl configs
            continue
        text = path.read_text()
        # a `# @package _global_` file (a recipe) sets keys from the top of the config, not under its group
        prefix = "" if "@package _global_" in text.split("\n", 3)[0] else ".".join(rel.parts[:-1])
        data = yaml.safe_load(text) or {}
        data.pop("defaults", None)
        for key, value in constraints.leaves(data, f"{prefix}." if prefix else ""):
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                found.append((str(rel), key, value))
    return found


def test_every_numeric_key_of_every_config_file_has_a_rule():
    keys = numeric_keys()
    assert len(keys) > 200  # the walk found the configs
    uncovered = [f"{file}: {key}" for file, key, _ in keys if constraints.rule_for(key) is None]
    assert not uncovered, f"numeric config keys without a rule in mmssl/constraints.py: {uncovered}"


def test_every_default_value_fits_its_rule():
    bad = []
    for file, key, value in numeric_keys():
        for v in value if isinstance(value, list) else [value]:
            if (problem := constraints.rule_for(key).problem(v)) is not None:
                bad.append(f"{file}: {key}={v!r} {problem}")
    assert not bad, bad


def test_rule_matching_is_by_path_then_leaf():
    assert constraints.rule_for("trainer.momentum").lt == 1  # the path rule beats the objective's [0, 1]
    assert constraints.rule_for("objective.byol.momentum").le == 1
    assert constraints.rule_for("intrinsic.rewards.rnd.lr").gt == 0
    assert constraints.rule_for("val_fraction").ge == 0 and constraints.rule_for("data.test_fraction").gt == 0
    assert constraints.rule_for("objective.simclr.name") is None


def pre(*extra):
    return lambda tmp: ["pretrain", *tiny_overrides(tmp / "run", *extra)]


def rl(*extra):
    return lambda tmp: ["rl", f"run_dir={tmp / 'run'}", "logger.mode=disabled", "progress=false", "eval.episodes=0",
                        "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=64", *extra]


# (id, argv, words the error line must hold, words it must not hold)
CASES = [
    ("lr-negative", pre("trainer.lr=-1"), ("'trainer.lr=-1'", "trainer.lr must be a number > 0"), ()),
    ("lr-zero", pre("trainer.lr=0"), ("'trainer.lr=0'", "> 0"), ()),
    ("weight-decay-negative", pre("trainer.weight_decay=-0.1"), ("trainer.weight_decay", "≥ 0"), ()),
    ("warmup-negative", pre("trainer.warmup_steps=-5"), ("trainer.warmup_steps", "≥ 0"), ()),
    ("log-every-zero", pre("trainer.log_every=0"), ("trainer.log_every", "≥ 1"), ()),
    ("checkpoint-every-negative", pre("trainer.checkpoint_every=-1"), ("trainer.checkpoint_every",), ()),
    ("grad-clip-zero", pre("trainer.grad_clip=0"), ("trainer.grad_clip", "> 0 or null"), ()),
    ("momentum-one", pre("trainer.momentum=1.0"), ("trainer.momentum", "in [0, 1)"), ()),
    ("final-lr-fraction", pre("trainer.final_lr_fraction=2"), ("trainer.final_lr_fraction", "in [0, 1]"), ()),
    ("lr-infinite", pre("trainer.lr=inf"), ("trainer.lr", "finite"), ()),
    ("threads-zero", pre("threads=0"), ("'threads=0'", "threads must be an int ≥ 1 or null"), ()),
    ("batch-size-null", pre("data.batch_size=null"), ("data.batch_size must be set",), ()),
    ("null-default-float", pre("data=fashion_mnist", "data.limit=2.5"), ("data.limit must be an int",), ()),
    ("knn-k-zero", pre("eval.knn_k=0"), ("eval.knn_k",), ()),
    ("probe-C-negative", pre("eval.linear_probe_C=-1"), ("eval.linear_probe_C",), ()),
    ("temperature-zero", pre("objective.simclr.temperature=0"), ("objective.simclr.temperature", "> 0"), ()),
    ("flip-p-above-one", pre("data.augment.flip_p=1.5"), ("data.augment.flip_p", "in [0, 1]"), ()),
    ("crop-scale-element", pre("data.augment.crop_scale=[0.2,1.5]"), ("crop_scale", "got 1.5"), ()),
    ("width-zero", pre("encoder.image.width=0"), ("encoder.image.width",), ()),
    ("sample-rate-zero", pre("data=trimodal_digits", "encoder=trimodal", "objective=bind", "data.sample_rate=0"),
     ("data.sample_rate",), ()),
    ("clip-seconds-negative", pre("data=trimodal_digits", "encoder=trimodal", "objective=bind",
                                  "data.clip_seconds=-1"), ("data.clip_seconds", "> 0"), ()),
    ("rl-learning-rate", rl("agent.learning_rate=-3e-4"), ("agent.learning_rate", "> 0"), ()),
    ("rl-gamma", rl("agent.gamma=1.5"), ("agent.gamma", "in [0, 1]"), ()),
    ("rl-clip-coef", rl("agent.clip_coef=0"), ("agent.clip_coef",), ()),
    ("rl-update-epochs", rl("agent.update_epochs=0"), ("agent.update_epochs",), ()),
    ("rl-ent-coef", rl("agent.ent_coef=-0.01"), ("agent.ent_coef", "≥ 0"), ()),
    ("rl-eval-episodes", rl("eval.episodes=-1"), ("eval.episodes",), ()),
    ("rl-threads", rl("threads=0"), ("threads",), ()),
    ("rl-intrinsic-coef", rl("intrinsic=rnd", "intrinsic.coef=-1"), ("intrinsic.coef", "≥ 0"), ()),
    ("rl-max-episode-steps", rl("env.max_episode_steps=0"), ("env.max_episode_steps",), ()),
    # the override that counts (the last of a key given twice) is the one quoted
    ("key-twice", pre("trainer.steps=5", "trainer.steps=abc"), ("'trainer.steps=abc'",), ("trainer.steps=5'",)),
    ("key-twice-range", pre("trainer.lr=0.1", "trainer.lr=-2"), ("'trainer.lr=-2'",), ("0.1",)),
    # values Hydra cannot lex: the message shows the quoted form
    ("unlexable-space", pre("logger.name=my run!"), ("'logger.name=my run!'", "quote the value", "logger.name='my run!'"),
     ()),
    ("unlexable-equals", pre("logger.name=a=b"), ("logger.name='a=b'",), ()),
    ("unlexable-brace", pre("logger.name=x{y"), ("quote the value",), ()),
    # keys of another group choice: named against the chosen option's keys
    ("key-of-default-encoder", pre("encoder=resnet18", "encoder.image.width=3"),
     ("'encoder.image.width' for encoder=resnet18", "image.cifar_stem"), ("with that value",)),
    ("key-of-default-objective", pre("objective=byol", "objective.simclr.temperature=0.5"),
     ("for objective=byol", "byol.momentum"), ("set the whole node",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_bad_value_is_one_line_quoting_the_override(case, tmp_path, capsys):
    _, argv, expect, absent = case
    code = main(argv(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error: "), (code, err)
    assert sum(line.startswith("error:") for line in err) == 1, err
    for text in expect:
        assert text in err[-1], err[-1]
    for text in absent:
        assert text not in err[-1], err[-1]
    assert not (tmp_path / "run").exists(), "a rejected config left a run folder behind"


def test_wandb_mode_from_the_environment_is_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    code = main(["pretrain", *[o for o in tiny_overrides(tmp_path / "run") if not o.startswith("logger.mode")]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "WANDB_MODE='sometimes'" in err[-1] and "logger.mode" not in err[-1], err
    assert not (tmp_path / "run").exists()


def test_empty_wandb_mode_means_unset(monkeypatch):
    from mmssl.logging import RunLogger

    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert compose("pretrain").logger.mode == "auto"
    assert RunLogger._resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert RunLogger._resolve_mode("auto") == "disabled"
    assert RunLogger._resolve_mode("online") == "online"  # an explicit logger.mode wins over the environment


def test_finetune_keys_are_checked_too():
    with pytest.raises(Exception, match="'lr=-1'.*lr must be a number > 0"):
        compose("finetune", ["lr=-1"])
    with pytest.raises(Exception, match="val_fraction"):
        compose("finetune", ["val_fraction=1.0"])
    with pytest.raises(Exception, match="pseudo_threshold"):
        compose("finetune", ["pseudo_threshold=2"])


def test_good_overrides_still_compose():
    cfg = compose("pretrain", ["trainer.lr=0.5", "trainer.grad_clip=null", "threads=2", "logger.name='my run!'"])
    assert cfg.trainer.lr == 0.5 and cfg.trainer.grad_clip is None and cfg.logger.name == "my run!"
    assert Path(config_dir()).is_dir()
