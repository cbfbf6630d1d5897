"""`mmssl sweep create|local SPEC`: wandb sweeps, on wandb's servers or with no server at all.

A spec is a YAML file in wandb's own sweep schema (``method: grid|random|bayes``, ``metric``,
``parameters`` with dotted config keys, ``early_terminate``, ``command``), e.g. configs/sweep/*.yaml::

    command: ['${env}', mmssl, pretrain, '${args_no_hyphens}']

- ``create`` validates the spec, registers it with ``wandb.sweep`` and prints the ``wandb agent`` command;
- ``local`` expands the same spec with :mod:`mmssl.search` (grid; random and bayes on Optuna's seeded
  samplers, bayes fed one finished configuration at a time), runs every configuration over ``--seeds`` seeds in
  at most ``--workers`` parallel subprocesses, each logged offline into ``<out>/runs/<name>`` (sync later
  with ``wandb sync``), and ends with the aggregate table of ``mmssl report``.

Before anything runs, every parameter value is composed into the config (``mmssl.config.compose``), so an
unknown key or a value of the wrong type fails at once, naming the parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import yaml

from mmssl import search
from mmssl.config import compose
from mmssl.errors import ConfigError, MMSSLError
from mmssl.logging import console

METHODS = ("grid", "random", "bayes")
PROGRAMS = ("pretrain", "rl")  # mmssl subcommands a sweep can run (each composes configs/<name>.yaml)
CURVES = ("train/loss", "success_rate", "episodic_return")  # plotted against step when the runs log them
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # wandb agent's default


# ---------------------------------------------------------------- spec


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found; see configs/sweep/ for examples")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep spec {path} is not valid YAML: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep spec {path} must be a mapping with method, metric and parameters")
    spec.setdefault("name", path.stem)
    return spec


#: the only command forms a spec may give (no shell, no interpreter, no path in front of mmssl)
COMMAND_FORMS = "[${env}, mmssl, pretrain|rl, ${args_no_hyphens}] or [mmssl, pretrain|rl, ${args_no_hyphens}, key=value…]"
_OVERRIDE_TOKEN = re.compile(r"[+~]{0,2}[A-Za-z_][\w.\-]*=.*", re.S)


def program_of(spec: dict, allow_any_command: bool = False) -> str:
    """The mmssl subcommand the spec's command runs (``pretrain`` or ``rl``).

    The command must be one of ``COMMAND_FORMS``: optional ``${env}``, then ``mmssl`` itself (not a path to
    some other executable called mmssl), the subcommand, then only ``${args_no_hyphens}`` and literal
    ``key=value`` overrides. Anything else (``bash -c``, ``python evil.py``, ``${interpreter}``) is refused
    unless ``allow_any_command`` (``--allow-any-command``): a spec file is data, not a script.
    """
    raw = spec.get("command") or DEFAULT_COMMAND
    if not allow_any_command:
        tokens = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(t, str) for t in tokens):
            raise ConfigError(f"sweep command must be a list of strings, got {raw!r}; use {COMMAND_FORMS}")
        body = tokens[1:] if tokens[:1] == ["${env}"] else tokens
        ok = (len(body) >= 2 and body[0] == "mmssl" and body[1] in PROGRAMS
              and all(t in ("${args_no_hyphens}",) or _OVERRIDE_TOKEN.fullmatch(t) for t in body[2:]))
        if not ok:
            shown = " ".join(tokens) if spec.get("command") else "(none: wandb's default runs ${interpreter} ${program})"
            raise ConfigError(f"sweep command {shown} is not an mmssl command; a sweep spec may only run "
                              f"{COMMAND_FORMS} (pass --allow-any-command to run it anyway)")
        return body[1]
    tokens = [str(t) for t in raw]
    tokens = [spec.get("program", "") if t == "${program}" else t for t in tokens]
    words = [w for t in tokens for w in str(t).split()]
    for i, word in enumerate(words[:-1]):
        if Path(word).name in ("mmssl", "mmssl.cli") and words[i + 1] in PROGRAMS:
            return words[i + 1]
    raise ConfigError("the sweep command must run `mmssl pretrain` or `mmssl rl` with Hydra overrides, e.g. "
                      "command: ['${env}', mmssl, pretrain, '${args_no_hyphens}']")


def override(name: str, value) -> str:
    """``key=value`` exactly as the wandb agent's ``${args_no_hyphens}`` writes it (Python ``str`` of the value)."""
    return f"{name}={value}"


def _culprit(program: str, extra: list[str], probes: dict, exc: ConfigError) -> tuple[str, object]:
    """The parameter whose first value the error names (else the first one that fails with the others)."""
    for name, values in probes.items():
        if f"{name}=" in str(exc) or f"{name!r}" in str(exc):
            return name, values[0]
    firsts = {name: values[0] for name, values in probes.items()}
    for name in probes:
        try:
            compose(program, [*extra, *(override(n, v) for n, v in firsts.items() if n != name)])
            return name, firsts[name]
        except ConfigError:
            continue
    return next(iter(firsts.items()))


def validate(spec: dict, extra: list[str] = (), allow_any_command: bool = False) -> str:
    """Check the spec against wandb's schema and every parameter value against the config; returns the program."""
    params = _check_structure(spec)
    program = program_of(spec, allow_any_command)  # before anything else runs or is imported
    violations = search.violations(params)
    if violations:
        raise ConfigError(f"invalid sweep spec: {'; '.join(' '.join(v.split()) for v in violations)[:300]}")
    if spec["method"] == "bayes" and not (spec.get("metric") or {}).get("name"):
        raise ConfigError("a bayes sweep needs `metric: {name: ..., goal: maximize|minimize}` to optimise")
    probes = _probes(params)
    for name, value, overrides in _value_checks(probes):
        try:
            compose(program, [*extra, *overrides])
        except ConfigError as exc:
            if name is None:  # the first values together: find the parameter that breaks alone
                name, value = _culprit(program, extra, probes, exc)
            raise ConfigError(f"sweep parameter {name!r} value {value!r}: {exc}") from None
    return program


def _check_structure(spec: dict) -> dict:
    """The spec's ``parameters`` after checking ``method`` and that every parameter is a flat mapping."""
    method = spec.get("method")
    if method not in METHODS:
        raise ConfigError(f"sweep method must be one of {', '.join(METHODS)}, got {method!r}")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError("sweep spec needs `parameters`: a mapping of config keys (trainer.lr) to values or ranges")
    for name, cfg in params.items():
        if not isinstance(cfg, dict):
            raise ConfigError(f"sweep parameter {name!r} must be a mapping like {{values: [...]}} or {{min: , max: }}")
        if "parameters" in cfg:
            raise ConfigError(f"sweep parameter {name!r}: write nested config keys as dotted names (trainer.lr)")
    return params


def _probes(params: dict) -> dict[str, list]:
    """``{parameter: values to check}`` (:func:`mmssl.search.probe_values`), a bad range as a one-line error."""
    probes = {}
    for name, cfg in params.items():
        try:
            probes[name] = search.probe_values(cfg)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"sweep parameter {name!r}: {exc}") from None
    return probes


def _value_checks(probes: dict[str, list]) -> list[tuple[str | None, object, list[str]]]:
    """The override lists to compose: (parameter, value, overrides), the first with every first value (None, None).

    Parameters combine (objective=byol makes objective.byol.* exist): every parameter's first value is composed
    together, then one parameter changes at a time. compose's type check only looks at the kind of a value,
    so among non-strings one value per Python type stands for the rest (keeps validation fast).
    """
    first = [override(name, values[0]) for name, values in probes.items()]
    checks: list[tuple[str | None, object, list[str]]] = [(None, None, first)]
    for name, values in probes.items():
        others = [o for o, n in zip(first, probes) if n != name]
        kinds = {type(values[0])}
        for value in values[1:]:
            if isinstance(value, str) or type(value) not in kinds:
                kinds.add(type(value))
                checks.append((name, value, [*others, override(name, value)]))
    return checks


# ---------------------------------------------------------------- expansion and commands


def expand(spec: dict, count: int | None = None, seed: int = 0) -> list[dict]:
    """Grid or random configurations as ``{key: value}`` dicts (:mod:`mmssl.search`)."""
    if spec["method"] == "grid":
        try:
            configs = search.grid(spec["parameters"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return configs[:count] if count else configs
    if spec["method"] == "random":
        count = count or spec.get("run_cap")
        if not count:
            raise ConfigError("a random sweep needs a run count: --count N or `run_cap: N` in the spec")
        return list(search.Search(spec["parameters"], "random", seed).draw(int(count)))
    raise ConfigError("bayes configurations depend on results; they are drawn one at a time while running")


def command(spec: dict, params: dict, extra: list[str] = ()) -> list[str]:
    """The spec's command with wandb agent macros filled in, plus ``extra`` Hydra overrides at the end."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args  # what `wandb agent` itself uses

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [str(spec.get("program", ""))]}
    out: list[str] = []
    for token in map(str, spec.get("command") or DEFAULT_COMMAND):
        if token.startswith("${") and token.endswith("}"):
            if token[2:-1] not in macros or token[2:-1] == "args_dict":
                raise ConfigError(f"sweep command macro {token} is not supported locally; use ${{args_no_hyphens}}")
            out += [str(x) for x in macros[token[2:-1]]]
        else:
            out.append(token)
    return out + list(extra)


def _executable(cmd: list[str]) -> list[str]:
    # run `mmssl` with this interpreter, so a sweep uses the same environment as the process that started it
    i = next((i for i, t in enumerate(cmd) if t == "mmssl"), None)
    return cmd if i is None else cmd[:i] + [sys.executable, "-m", "mmssl.cli"] + cmd[i + 1:]


def _run_one(job: dict, env: dict) -> dict:
    run_dir = Path(job["run_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(_executable(job["command"]), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    return job | {"returncode": rc, "seconds": round(time.perf_counter() - start, 2), "log": str(log)}


class LocalSweep:
    """Runs a spec's configurations × seeds as subprocesses, ``workers`` at a time, under ``out``."""

    def __init__(self, spec: dict, out: Path, seeds: int, workers: int, extra: list[str]):
        self.spec, self.out, self.seeds, self.workers, self.extra = spec, out, seeds, workers, extra
        self.records: list[dict] = []
        self.env = dict(os.environ)
        # parallel runs share the cores: give each its share of intra-op threads unless the user chose
        self.env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        self.fixed = [] if any(e.startswith("logger.mode=") for e in extra) else ["logger.mode=offline"]
        self.fixed.append(f"logger.group={spec['name']}")

    def jobs(self, index: int, params: dict) -> list[dict]:
        seeds = [params["seed"]] if "seed" in params else range(self.seeds)
        jobs = []
        for s in seeds:
            run_dir = self.out / "runs" / f"c{index:03d}-s{s}"
            overrides = [f"seed={s}"] * ("seed" not in params) + [f"run_dir={run_dir}", *self.fixed, *self.extra]
            jobs.append({"config_index": index, "seed": s, "params": params, "run_dir": str(run_dir),
                         "command": command(self.spec, params, overrides)})
        return jobs

    def run(self, jobs: list[dict], total: int) -> list[dict]:
        done = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for future in as_completed([pool.submit(_run_one, job, self.env) for job in jobs]):
                result = future.result()
                done.append(result)
                self.records.append(result)
                status = "ok" if result["returncode"] == 0 else f"FAILED (exit {result['returncode']}), see {result['log']}"
                shown = {k: v for k, v in result["params"].items() if "value" not in self.spec["parameters"][k]}
                console(f"[{len(self.records)}/{total}] {Path(result['run_dir']).name} {shown} "
                        f"{status} ({result['seconds']:.1f} s)")
                with open(self.out / "runs.jsonl", "a") as f:
                    f.write(json.dumps(result, default=str) + "\n")
        return done


def run_local(spec: dict, out: Path, seeds: int = 1, workers: int = 1, count: int | None = None,
              extra: list[str] = (), dry_run: bool = False, sampler_seed: int = 0, resamples: int = 2000,
              allow_any_command: bool = False) -> dict:
    """Validate, expand, run and report a spec locally; returns the report (``mmssl.report.report``)."""
    extra = list(extra)
    if seeds < 1 or workers < 1:
        raise ConfigError(f"--seeds and --workers must be at least 1, got {seeds} and {workers}")
    if "seed" in spec["parameters"] and seeds > 1:
        raise ConfigError("the spec sweeps `seed` itself; drop --seeds or the seed parameter")
    validate(spec, extra, allow_any_command)
    if spec.get("early_terminate"):
        console("note: early_terminate is applied by wandb agents only; local runs go to completion")
    sweep = LocalSweep(spec, out, seeds, workers, extra)
    configs, n_configs, total = _plan(spec, seeds, count, sampler_seed)
    if dry_run:
        _dry_run(sweep, configs, n_configs, total, sampler_seed)
        return {}
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"sweep folder {out} is not empty; pass a new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    console(f"sweep {spec['name']}: {n_configs} configurations × {seeds} seeds = {total} runs, "
            f"{workers} at a time, in {out}")
    if spec["method"] == "bayes":
        _run_bayes(sweep, spec, n_configs, total, sampler_seed)
    else:
        sweep.run([job for i, params in enumerate(configs) for job in sweep.jobs(i, params)], total)
    return _report(sweep, out, resamples)


def _plan(spec: dict, seeds: int, count: int | None, sampler_seed: int) -> tuple[list[dict], int, int]:
    """(configurations drawn up front — none for bayes, whose draws depend on results —, their count, runs)."""
    bayes = spec["method"] == "bayes"
    configs = [] if bayes else expand(spec, count, sampler_seed)
    n_configs = (count or spec.get("run_cap") or 0) if bayes else len(configs)
    if bayes and not n_configs:
        raise ConfigError("a bayes sweep needs a run count: --count N or `run_cap: N` in the spec")
    total = n_configs * (1 if "seed" in spec["parameters"] else seeds)
    return configs, n_configs, total


def _dry_run(sweep: LocalSweep, configs: list[dict], n_configs: int, total: int, sampler_seed: int) -> None:
    """Print the commands of the configurations known up front; start nothing."""
    # a bayes sweep's first draw has no results to use; later ones depend on them
    shown = configs or [search.Search(sweep.spec["parameters"], "bayes", sampler_seed).ask()]
    for i, params in enumerate(shown):
        for job in sweep.jobs(i, params):
            print(shlex.join(job["command"]))
    console(f"dry run: {n_configs} configurations × {sweep.seeds} seeds = {total} runs; nothing started")


def _report(sweep: LocalSweep, out: Path, resamples: int) -> dict:
    """The report (``mmssl.report.report``) of the sweep's finished runs, grouped by the swept parameters."""
    from mmssl import report as rep

    spec = sweep.spec
    ok = sorted((r for r in sweep.records if r["returncode"] == 0 and rep.is_run_dir(Path(r["run_dir"]))),
                key=lambda r: r["run_dir"])
    if not ok:
        raise MMSSLError(f"every run of the sweep failed; see the logs, e.g. {sweep.records[0]['log']}")
    runs = [rep.read_run(r["run_dir"]) for r in ok]
    for run, record in zip(runs, ok):  # group by the parameter values as swept (objective=byol, not its subkeys)
        run.config |= record["params"]
    metric = (spec.get("metric") or {}).get("name")
    # group by what the sweep varies (constant parameters would only add identical columns)
    group_by = [k for k, v in spec["parameters"].items() if k != "seed" and "value" not in v] or None
    curves = [c for c in CURVES if any(c in r.metric_names() for r in runs)]
    result = rep.report(runs, [metric], group_by, out / "report", curves=curves, n_resamples=resamples)
    print(result["markdown"])
    failed = len(sweep.records) - len(ok)
    console(f"{len(ok)} runs finished" + (f", {failed} failed (see runs.jsonl)" if failed else "")
            + f"; report in {out / 'report'}; upload with: wandb sync {out}/runs/*/wandb/offline-run-*")
    return result


def _run_bayes(sweep: LocalSweep, spec: dict, n_configs: int, total: int, seed: int) -> None:
    """Sequential Bayesian optimisation: each configuration's mean metric over seeds feeds the next draw."""
    from mmssl import report as rep

    metric = spec["metric"]["name"]
    engine = search.Search(spec["parameters"], "bayes", seed, goal=spec["metric"].get("goal", "maximize"))
    for index in range(n_configs):
        params = engine.ask()
        results = sweep.run(sweep.jobs(index, params), total)
        runs = [rep.read_run(r["run_dir"]) for r in results if r["returncode"] == 0 and rep.is_run_dir(Path(r["run_dir"]))]
        values = []
        if runs:
            name = rep.resolve_metric(runs, metric)  # fails clearly when the runs never log the metric
            values = [v for v in (r.final(name) for r in runs) if v is not None]
        engine.tell(params, float(np.mean(values)) if values else None)


def create(spec: dict, project: str | None, entity: str | None, allow_any_command: bool = False) -> str:
    """Register the spec with wandb; returns the sweep path ``entity/project/id``."""
    validate(spec, allow_any_command=allow_any_command)
    import wandb

    if not wandb.login(prompt=False, verify=False):
        raise ConfigError("`mmssl sweep create` needs a wandb login: set WANDB_API_KEY or run `wandb login` "
                          "(or run the spec without a server: mmssl sweep local SPEC)")
    project = project or spec.get("project") or "mmssl"
    try:
        sweep_id = wandb.sweep(spec, project=project, entity=entity or spec.get("entity"))
    except Exception as exc:  # noqa: BLE001 - network or permission problems, reported in one line
        raise ConfigError(f"wandb could not create the sweep ({str(exc).splitlines()[0][:160]})") from None
    entity = entity or spec.get("entity") or wandb.Api().default_entity
    return f"{entity}/{project}/{sweep_id}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="mmssl sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="register SPEC with wandb and print the agent command")
    c.add_argument("spec")
    c.add_argument("--project")
    c.add_argument("--entity")
    c.add_argument("--allow-any-command", action="store_true", help="run a spec command that is not `mmssl pretrain|rl`")
    loc = sub.add_parser("local", help="run SPEC here, no server: N seeds per configuration, K parallel workers")
    loc.add_argument("spec")
    loc.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides for every run (trainer.steps=50)")
    loc.add_argument("--workers", type=int, default=1, help="parallel runs")
    loc.add_argument("--seeds", type=int, default=1, help="seeds per configuration (seed=0..N-1)")
    loc.add_argument("--count", type=int, help="configurations to run (random/bayes; caps a grid)")
    loc.add_argument("--out", help="sweep folder (default sweeps/<spec name>-<time>)")
    loc.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    loc.add_argument("--sampler-seed", type=int, default=0, help="seed of the random/bayes search")
    loc.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the final report")
    loc.add_argument("--allow-any-command", action="store_true", help="run a spec command that is not `mmssl pretrain|rl`")
    # Hydra overrides may come anywhere on the line (argparse would only take them right after SPEC)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    spec = load_spec(args.spec)
    if args.action == "create":
        path = create(spec, args.project, args.entity, args.allow_any_command)
        print(f"created sweep {path}\nrun agents with:  wandb agent {path}")
        return
    out = Path(args.out or f"sweeps/{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_local(spec, out, args.seeds, args.workers, args.count, overrides, args.dry_run, args.sampler_seed,
              args.resamples, args.allow_any_command)
