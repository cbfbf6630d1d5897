"""The local sweep engine: wandb's parameter schema, searched with Optuna's samplers.

A spec's ``parameters`` use wandb's sweep schema (so the same file runs on wandb's servers with
``mmssl sweep create``): ``{value: v}``, ``{values: [...]}`` (optionally ``probabilities``), or a range
``{min, max}`` with ``distribution`` one of :data:`DISTRIBUTIONS` (inferred from ``min``/``max`` when absent:
two ints → ``int_uniform``, else ``uniform``). Locally, ``grid`` takes the product of listed values (an
``int_uniform`` range counts as its integers), ``random`` draws with Optuna's ``RandomSampler`` and ``bayes``
with its ``TPESampler`` (Bergstra et al. 2011), both seeded, so a search is reproducible from its seed.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "log_uniform_values", "q_uniform",
                 "q_log_uniform_values")
_KEYS = {"value", "values", "probabilities", "distribution", "min", "max", "q"}


def violations(parameters: dict) -> list[str]:
    """What is wrong with ``parameters`` against the schema (empty when nothing is): one line per bad parameter."""
    out = []
    for name, p in parameters.items():
        problem = _violation(p)
        if problem is not None:
            out.append(f"{name}: {problem}")
    return out


def _violation(p: object) -> str | None:
    """What is wrong with one parameter's spec, or None."""
    if not isinstance(p, dict):
        return "must be a mapping like {values: [...]} or {min: , max: }"
    if unknown := sorted(set(p) - _KEYS):
        return f"unknown field(s) {', '.join(unknown)} (use {', '.join(sorted(_KEYS))})"
    try:
        kind = distribution(p)
    except ValueError as exc:
        return str(exc)
    if kind == "categorical":
        return _categorical_violation(p)
    return None if kind == "constant" else _range_violation(kind, p)


def _categorical_violation(p: dict) -> str | None:
    """``values`` must be a non-empty list; ``probabilities``, when given, one per value summing to 1."""
    if not isinstance(p["values"], list) or not p["values"]:
        return "values must be a non-empty list"
    if "probabilities" in p and (len(p["probabilities"]) != len(p["values"])
                                 or not math.isclose(sum(p["probabilities"]), 1.0, abs_tol=1e-6)):
        return "probabilities must have one entry per value and sum to 1"
    return None


def _range_violation(kind: str, p: dict) -> str | None:
    """A range needs numeric ``min < max``; log ranges ``min > 0``, quantised ones ``q > 0``, int ones integers."""
    lo, hi = p.get("min"), p.get("max")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
        return f"{kind} needs numeric min and max"
    if lo >= hi:
        return f"min ({lo}) must be below max ({hi})"
    if "log" in kind and lo <= 0:
        return f"{kind} needs min > 0 (got {lo})"
    if kind.startswith("q_") and not (isinstance(p.get("q"), int | float) and p["q"] > 0):
        return f"{kind} needs a step q > 0"
    if kind == "int_uniform" and not all(isinstance(v, int) for v in (lo, hi)):
        return "int_uniform needs integer min and max"
    return None


def distribution(p: dict) -> str:
    """The distribution a parameter spec names or implies."""
    if "value" in p:
        return "constant"
    if "values" in p:
        return "categorical"
    kind = p.get("distribution")
    if kind is None:
        if "min" not in p or "max" not in p:
            raise ValueError("give value, values, or min and max")
        kind = "int_uniform" if all(isinstance(p[k], int) and not isinstance(p[k], bool) for k in ("min", "max")) \
            else "uniform"
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"distribution {kind!r} is not supported locally; use one of {', '.join(DISTRIBUTIONS)}")
    return kind


def probe_values(p: dict) -> list:
    """Values that stand for a parameter when validating: every listed value, else the 1 %, 50 %, 99 % points."""
    kind = distribution(p)
    if kind == "constant":
        return [p["value"]]
    if kind == "categorical":
        return list(p["values"])
    lo, hi = p["min"], p["max"]
    if "log" in kind:
        points = [math.exp(math.log(lo) + q * (math.log(hi) - math.log(lo))) for q in (0.01, 0.5, 0.99)]
    else:
        points = [lo + q * (hi - lo) for q in (0.01, 0.5, 0.99)]
    if kind == "int_uniform":
        return [int(round(v)) for v in points]
    if kind.startswith("q_"):
        return [_quantise(v, p["q"]) for v in points]
    return points


def grid(parameters: dict) -> list[dict]:
    """Every combination of the listed values, in spec order (the first parameter varies slowest)."""
    axes = []
    for name, p in parameters.items():
        kind = distribution(p)
        if kind == "constant":
            axes.append([p["value"]])
        elif kind == "categorical":
            axes.append(list(p["values"]))
        elif kind == "int_uniform":
            axes.append(list(range(p["min"], p["max"] + 1)))
        else:
            raise ValueError(f"grid search needs listed values; parameter {name!r} is a {kind} range")
    return [dict(zip(parameters, combo, strict=True)) for combo in itertools.product(*axes)]


class Search:
    """Seeded ask/tell search over the spec's parameters (``random`` or ``bayes``) on an Optuna study."""

    def __init__(self, parameters: dict, method: str, seed: int = 0, goal: str = "maximize"):
        import optuna

        from mmssl.errors import ConfigError

        if weighted := [n for n, p in parameters.items() if "probabilities" in p]:
            raise ConfigError(f"sweep parameter {weighted[0]!r}: `probabilities` only work on wandb's servers "
                              "(mmssl sweep create); drop them to run the sweep locally")

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.RandomSampler(seed=seed) if method == "random" else \
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)  # random draws before TPE models
        self.study = optuna.create_study(sampler=sampler, direction=goal)
        self.parameters = parameters
        self._trials: dict[int, Any] = {}

    def ask(self) -> dict:
        """The next configuration as ``{key: value}`` (plain Python values)."""
        with warnings.catch_warnings():  # Optuna flags its own experimental features
            warnings.simplefilter("ignore")
            trial = self.study.ask()
        params = {name: self._suggest(trial, name, p) for name, p in self.parameters.items()}
        self._trials[id(params)] = trial
        return params

    def tell(self, params: dict, value: float | None) -> None:
        """Report a configuration's metric (``None``: the runs failed or never logged it)."""
        import optuna

        trial = self._trials.pop(id(params))
        if value is None or not math.isfinite(value):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def draw(self, n: int) -> Iterator[dict]:
        """``n`` configurations that do not depend on results (random search)."""
        for _ in range(n):
            params = self.ask()
            self.tell(params, 0.0)
            yield params

    @staticmethod
    def _suggest(trial, name: str, p: dict):
        kind = distribution(p)
        if kind == "constant":
            return p["value"]
        if kind == "categorical":
            values = p["values"]
            # Optuna's categorical choices must be plain scalars: draw an index, return the value
            index = trial.suggest_categorical(name, list(range(len(values))))
            return values[index]
        lo, hi = p["min"], p["max"]
        if kind == "int_uniform":
            return trial.suggest_int(name, lo, hi)
        if kind.startswith("q_"):
            return _quantise(trial.suggest_float(name, lo, hi, log="log" in kind), p["q"])
        return trial.suggest_float(name, lo, hi, log="log" in kind)


def _quantise(value: float, q: float) -> float | int:
    out = round(value / q) * q
    return int(out) if isinstance(q, int) else out
