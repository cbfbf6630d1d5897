"""Ranges, signs and types of every numeric config key, in one table, checked once at compose time.

``check(cfg, overrides)`` walks every numeric (or numeric-by-rule) leaf of a composed config, finds its
rule in ``RULES`` and raises one ``ConfigError`` for the first value outside it, quoting the override
that set it (``bad override 'trainer.lr=-1': trainer.lr must be > 0, got -1``). It runs inside
``mmssl.config.compose``, so a bad value fails before a run folder, a download or a model exists —
never deep inside the first library that chokes on it.

A rule's pattern is either a dotted path glob (``trainer.steps``, ``objective.*.momentum``), matched
against the full key, or a bare glob (``*batch_size``), matched against the last path component, so
one line covers a key wherever a config group puts it (``data.batch_size``, finetune's ``batch_size``,
``intrinsic.rnd.batch_size``). The first matching rule wins. Lists of numbers (``crop_scale``,
``channels``) are checked element-wise. ``tests/reliability/test_constraints.py`` walks every numeric key
of every YAML file under ``configs/`` and fails if one has no rule here.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mmssl.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """``kind`` (int or float) with optional bounds; ``none=True`` when null is a meaningful value."""

    kind: type = float
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    none: bool = False

    def problem(self, value) -> str | None:
        """Why ``value`` breaks the rule (``"must be > 0"``), or None when it fits."""
        if value is None:
            return None if self.none else f"must be set ({self.describe()})"
        if isinstance(value, bool) or not isinstance(value, int | float) or (self.kind is int and isinstance(value, float)):
            return f"must be {self.describe()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be finite ({self.describe()})"
        if ((self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
                or (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le)):
            return f"must be {self.describe()}"
        return None

    def describe(self) -> str:
        low = f"> {_num(self.gt)}" if self.gt is not None else f"≥ {_num(self.ge)}" if self.ge is not None else ""
        high = f"< {_num(self.lt)}" if self.lt is not None else f"≤ {_num(self.le)}" if self.le is not None else ""
        if low and high:
            left = "(" if self.gt is not None else "["
            right = ")" if self.lt is not None else "]"
            bounds = f"in {left}{_num(self.gt if self.gt is not None else self.ge)}, " \
                     f"{_num(self.lt if self.lt is not None else self.le)}{right}"
        else:
            bounds = low or high
        text = f"{'an int' if self.kind is int else 'a number'}{' ' + bounds if bounds else ''}"
        return text + (" or null" if self.none else "")


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


INT = Range(int)
COUNT = Range(int, ge=1)  # sizes, widths, counts
NONNEG_INT = Range(int, ge=0)  # intervals where 0 means "off", masks, paddings
POSITIVE = Range(float, gt=0)
NONNEG = Range(float, ge=0)
PROBABILITY = Range(float, ge=0, le=1)
OPEN_UNIT = Range(float, gt=0, lt=1)
FINITE = Range(float)

#: (patterns, rule); first match wins, so specific paths come before bare leaf globs
RULES: list[tuple[str, Range]] = [
    # trainer.* (configs/trainer/default.yaml)
    ("trainer.steps steps", COUNT),
    ("trainer.grad_clip", Range(float, gt=0, none=True)),
    ("trainer.momentum", Range(float, ge=0, lt=1)),
    ("final_lr_fraction", PROBABILITY),
    ("log_every", COUNT),
    ("*_every every", NONNEG_INT),
    ("keep_checkpoints", NONNEG_INT),  # 0 keeps every checkpoint
    ("warmup_steps", NONNEG_INT),
    # optimisation wherever it appears (trainer, agent, finetune, intrinsic networks)
    ("head_lr", Range(float, gt=0, none=True)),
    ("lr *_lr learning_rate", POSITIVE),
    ("weight_decay", NONNEG),
    ("layer_decay", Range(float, gt=0, le=1, none=True)),
    ("max_grad_norm", POSITIVE),
    ("betas *_betas", Range(float, ge=0, lt=1)),  # Adam's (β₁, β₂), element-wise
    ("trust_coefficient", POSITIVE),
    # top level of pretrain / rl / finetune
    ("threads", Range(int, ge=1, none=True)),
    ("seed data_seed", Range(int, ge=0, none=True)),
    ("stop_after_updates", Range(int, ge=1, none=True)),
    ("labels", POSITIVE),  # fraction in (0, 1] or a per-class count; finetune checks which
    ("unfreeze_last", COUNT),
    ("patience", NONNEG_INT),
    ("pseudo_threshold", PROBABILITY),
    # agent.* (PPO)
    ("total_timesteps num_envs num_steps num_minibatches update_epochs", COUNT),
    ("gamma gae_lambda intrinsic_gamma", PROBABILITY),
    ("clip_coef", POSITIVE),
    ("target_kl", Range(float, gt=0, none=True)),
    ("ent_coef vf_coef extrinsic_coef intrinsic_coef", NONNEG),
    ("head_hidden", NONNEG_INT),
    # eval.*
    ("episodes probe_episodes max_video_frames", NONNEG_INT),
    ("knn_k", COUNT),
    ("linear_probe_C", POSITIVE),
    # data.* and augmentation options
    ("val_fraction", Range(float, ge=0, lt=1)),
    ("*_fraction", OPEN_UNIT),
    ("limit", Range(int, ge=1, none=True)),
    ("max_pixels", Range(int, ge=1, none=True)),
    ("env.max_episode_steps max_episode_steps", Range(int, ge=1, none=True)),
    ("sample_rate", COUNT),
    ("clip_seconds", POSITIVE),
    ("*_p", PROBABILITY),
    ("crop_scale *_crop_scale", Range(float, gt=0, le=1)),
    ("local_crops", NONNEG_INT),
    ("fill", PROBABILITY),  # a pixel value in [0, 1]
    ("degrees jitter noise_std shift", NONNEG),
    ("hue", Range(float, ge=0, le=0.5)),
    ("data.size size", Range(int, ge=1, none=True)),
    # encoders (widths and shapes), objectives (heads, temperatures, masks, queues, clusters)
    ("queue_length *_start_step", NONNEG_INT),  # 0: no queue / from the start
    ("*_iterations n_prototypes", COUNT),
    ("*batch_size *_dim dim *_size *_length *_layers layers depth heads width *_width channels in_channels "
     "n_mels *_hidden capacity hash_bits k max_entries exact_max_elements *_steps patch_frames num_tiles "
     "vocab_size max_offset", COUNT),
    ("*_mask *_masks *_mask_width pad pad_id special_ids mission_tokens", NONNEG_INT),
    ("temperature *_temp epsilon", POSITIVE),
    ("momentum *_momentum", PROBABILITY),
    ("mask_ratio mask_prob", OPEN_UNIT),
    ("bias", FINITE),
    ("weight *_weight margin beta lambda_offdiag latent_penalty", NONNEG),
    # data loading (workers, shard buffers) and masked-patch objectives (mae, ijepa, data2vec)
    ("num_workers shuffle_buffer", NONNEG_INT),
    ("probe_items few_labels patch_mels *_depth *_heads num_targets top_k min_keep", COUNT),
    ("mlp_ratio target_aspect", POSITIVE),
    ("target_scale context_scale", Range(float, gt=0, le=1)),
    ("momentum_end", PROBABILITY),
    ("loss_beta", NONNEG),  # 0: squared error, > 0: smooth-L1 with that β
    # intrinsic rewards
    ("coef", NONNEG),
    ("coef_decay update_proportion", Range(float, gt=0, le=1)),
    ("c cluster_distance kernel_epsilon ridge obs_clip max_similarity", POSITIVE),
    ("max_modulation", Range(float, ge=1)),
]


def rule_for(path: str) -> Range | None:
    """The rule of a dotted config key (``trainer.lr``), or None when no rule names it."""
    leaf = path.rsplit(".", 1)[-1]
    for patterns, rule in RULES:
        for pattern in patterns.split():
            if fnmatch.fnmatchcase(path if "." in pattern else leaf, pattern):
                return rule
    return None


def leaves(node, prefix: str = ""):
    """(dotted path, value) of every leaf of a nested mapping; a list of scalars is one leaf."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(node, Sequence) and not isinstance(node, str) and any(isinstance(v, Mapping) for v in node):
        for value in node:
            yield from leaves(value, prefix)
    else:
        yield prefix[:-1], node


def check(cfg: Mapping, overrides: Sequence[str] = (), defaults: Mapping | None = None) -> None:
    """Raise ``ConfigError`` for the first value of ``cfg`` (a resolved, plain nested dict) outside its rule.

    Only numbers, nulls and lists of numbers are checked: a string where a number belongs is left to the
    type check against the default (``compose``) or the registry's signature check, which name the type.
    A null is accepted where ``defaults`` (the config with the same group choices, no value overrides)
    has one too: such nulls mean "off" or "filled in from the env/data at build time".
    """
    problems = []
    for path, value in leaves(cfg):
        if value is None and (defaults is None or _get(defaults, path) is None):
            continue
        values = value if isinstance(value, list | tuple) else [value]
        # bools are ints to Python, but a flag (anneal_lr) is not a number: its type is checked against the default
        if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values) or (
                isinstance(value, list | tuple) and not value):
            continue
        rule = rule_for(path)
        if rule is None:
            continue
        for v in values:
            problem = rule.problem(v)
            if problem:
                where, rank = _where(path, overrides)
                problems.append((rank, f"{where}{path} {problem}, got {v!r}"))
                break
    if problems:  # a value an override set beats its interpolated copies (encoder.audio.sample_rate ← data's)
        raise ConfigError(min(problems, key=lambda p: p[0])[1])


def _get(node, path: str):
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _where(path: str, overrides: Sequence[str]) -> tuple[str, int]:
    """(``"bad override 'k=v': "``, 0) for the last override of ``path``; rank 1 for one of a node above it."""
    for override in reversed(overrides):
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and path == key:
            return f"bad override {override!r}: ", 0
    for override in reversed(overrides):
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and path.startswith(key + "."):
            return f"bad override {override!r}: ", 1
    return "config key ", 2
