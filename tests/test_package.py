"""mmssl as an installed package: the wheel works outside the checkout, the package list is complete, the
public API is importable without heavy libraries, and the declared requirements allow current numpy."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_package_list_covers_every_package_folder():
    options = _setup_cfg()["options"]
    listed = set(options["packages"].split())
    mapping = dict(line.split(" = ") for line in options["package_dir"].strip().splitlines())
    folders = {"mmssl": ROOT / "mmssl", **{name: ROOT / path for name, path in mapping.items()}}
    found = {"mmssl.configs"}
    for top, name in (("mmssl", "mmssl"), ("envs", "mmssl_envs")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"setup.cfg packages differ from the folders: {sorted(found ^ listed)}"
    assert all(path.is_dir() for path in folders.values())


def test_requirements_allow_numpy_2_and_current_opencv():
    cfg = _setup_cfg()
    lines = [line.split("#")[0].strip() for section in ("install_requires",)
             for line in cfg["options"][section].splitlines()]
    lines += [line.split("#")[0].strip() for extra in cfg["options.extras_require"].values()
              for line in extra.splitlines()]
    assert not [line for line in lines if line.startswith("sweeps")]
    capped = [line for line in lines if line.startswith(("numpy", "opencv")) and "<" in line]
    assert not capped, capped


def test_import_is_light_and_public_api_resolves():
    code = ("import sys, mmssl; heavy = [m for m in ('torch', 'open_clip', 'gymnasium', 'wandb', 'hydra') "
            "if m in sys.modules]; print(heavy); print(callable(mmssl.pretrain), mmssl.OBJECTIVES.kind)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"import mmssl pulled in {out[0]}"
    assert out[1] == "True objective"
    import mmssl

    for name in mmssl.__all__:
        assert getattr(mmssl, name) is not None, name


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """The built wheel installed alone into its own folder, first on the path, run from outside the checkout.

    ``pip install --target`` (no dependencies: they are this interpreter's) works the same under a virtual
    environment or a system Python; the folder shadows the editable checkout install.
    """
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(base / "dist"), str(ROOT)], check=True, cwd=base)
    wheel = next((base / "dist").glob("mmssl-*.whl"))
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, cwd=base)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"WANDB_MODE": "disabled",
                                                                         "PYTHONPATH": str(site)}
    work = base / "project"  # an unrelated folder: the user's project
    work.mkdir()
    return {"wheel": wheel, "bin": site / "bin", "site": site, "env": env, "cwd": work}


def _mmssl(wheel_env, *args, check=True):
    out = subprocess.run([str(wheel_env["bin"] / "mmssl"), *args], cwd=wheel_env["cwd"], env=wheel_env["env"],
                         capture_output=True, text=True)
    if check:
        assert out.returncode == 0, f"mmssl {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


def test_wheel_holds_configs_and_envs(wheel_env):
    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    assert "mmssl/configs/pretrain.yaml" in names and "mmssl/configs/objective/simclr.yaml" in names
    assert "mmssl_envs/__init__.py" in names and not any(n.startswith("envs/") for n in names)
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)


def test_wheel_runs_outside_the_checkout(wheel_env):
    where = subprocess.run([sys.executable, "-c", "import mmssl, mmssl_envs; "
                            "print(mmssl.__file__); print(mmssl_envs.__file__)"], cwd=wheel_env["cwd"],
                           env=wheel_env["env"], capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(wheel_env["site"])) for path in where), where
    for command in ("pretrain", "rl", "eval", "finetune", "export", "sweep", "report", "list"):
        _mmssl(wheel_env, command, "--help")
    assert "byol" in _mmssl(wheel_env, "list", "objectives").stdout
    run = wheel_env["cwd"] / "pre"
    _mmssl(wheel_env, "pretrain", "trainer.steps=2", "eval.baselines=false", f"run_dir={run}")
    env_info = json.loads((run / "environment.json").read_text())
    assert env_info["git"] is None and env_info["libraries"]["torch"]
    _mmssl(wheel_env, "rl", "agent.num_envs=2", "agent.num_steps=16", "agent.total_timesteps=64", "eval.episodes=1",
           "eval.video=false", "progress=false", f"run_dir={wheel_env['cwd'] / 'rl'}")
    assert (wheel_env["cwd"] / "rl" / "summary.json").is_file()
    sweep = wheel_env["cwd"] / "multi"
    out = _mmssl(wheel_env, "pretrain", "-m", "trainer.steps=2,3", "eval.baselines=false", f"run_dir={sweep}")
    assert "2 job(s)" in out.stdout
    steps = [json.loads((sweep / i / "summary.json").read_text())["train/steps"] for i in ("0", "1")]
    assert steps == [2, 3]


def test_wheel_user_config_folder_and_plugin(wheel_env):
    work = wheel_env["cwd"]
    (work / "my_plugin.py").write_text((ROOT / "examples" / "plugin" / "align_uniform.py").read_text())
    user = work / "conf" / "objective"
    user.mkdir(parents=True)
    (user / "simclr.yaml").write_text("simclr:\n  name: simclr\n  temperature: 0.7\n")  # replaces the packaged file
    shown = _mmssl(wheel_env, "pretrain", "--config-dir", str(work / "conf"), "--cfg", "job").stdout
    assert "temperature: 0.7" in shown and "projection_dim" not in shown
    run = work / "plug"
    _mmssl(wheel_env, "pretrain", "plugins=[my_plugin]", "objective=align_uniform", "objective.align_uniform.lam=0.5",
           "trainer.steps=2", "eval.baselines=false", f"run_dir={run}")
    out = _mmssl(wheel_env, "eval", str(run))
    assert "linear probe" in out.stdout
    bad = _mmssl(wheel_env, "pretrain", "plugins=[my_plugin]", "objective=align_uniform",
                 "objective.align_uniform.lamb=0.5", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "lam" in bad.stderr


def test_api_reference_check_resolves_references():
    import importlib.util

    spec = importlib.util.spec_from_file_location("api_docs", ROOT / ".ci" / "api_docs.py")
    api_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_docs)
    import mmssl.config

    assert api_docs.resolve("compose", mmssl.config)  # a name of the module itself
    assert api_docs.resolve("mmssl.plugins.load_plugins", mmssl.config)
    assert api_docs.resolve("registry.OBJECTIVES", mmssl.config)  # relative to the package
    assert not api_docs.resolve("no_such_function", mmssl.config)
    assert not api_docs.resolve("mmssl.plugins.no_such_function", mmssl.config)
    assert api_docs.ROLE.findall("see :func:`mmssl.config.compose` and :class:`~mmssl.Registry`") == [
        "mmssl.config.compose", "mmssl.Registry"]
