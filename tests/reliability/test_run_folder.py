"""A run folder is never destroyed or mixed: refusals are one `error:` line that leave every file as it was.

Covers `mmssl pretrain`, `mmssl rl` and `mmssl finetune` on a folder that holds a run, fresh default
folders, resume with damaged checkpoints / changed keys / another kind of run / no checkpoint, the run
lock (live, stale, from another host), atomic writes of every run file and the single final checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import mmssl.io
from mmssl import checkpoint
from mmssl.cli import main
from mmssl.config import compose
from mmssl.train import run_folder
from tests.conftest import tiny_overrides
from tests.reliability.harness import fit

RL = ["logger.mode=disabled", "progress=false", "eval.episodes=0", "agent.num_envs=2", "agent.num_steps=16",
      "agent.total_timesteps=64", "checkpoint_every=1"]


def _files(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(capsys, argv, root, *expect) -> str:
    """``argv`` exits 2 with exactly one `error:` line holding ``expect`` and changes no file under ``root``."""
    before = _files(root)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error: "), (code, err)
    assert sum(line.startswith("error:") for line in err) == 1, err
    for text in expect:
        assert text in err[-1], err[-1]
    after = _files(root)
    assert {k: v for k, v in after.items() if k in before} == before, "a refused command changed files"
    assert set(after) == set(before), f"a refused command left files: {set(after) - set(before)}"
    return err[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished pretraining run (6 steps, checkpoints at 3 and 6) and a finished RL run (2 updates)."""
    root = tmp_path_factory.mktemp("finished")
    assert main(["pretrain", *tiny_overrides(root / "pretrain")]) == 0
    assert main(["rl", f"run_dir={root / 'rl'}", *RL]) == 0
    return root


@pytest.fixture
def runs(finished, tmp_path):
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    return tmp_path


# -- a folder that holds a run -------------------------------------------------------------------------------

def test_pretrain_into_a_finished_run_refuses(runs, capsys):
    assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "pretrain", "seed=1")], runs,
             "already holds a pretraining run", "config.yaml", "checkpoints/", "resume=true")


def test_rl_into_a_finished_run_refuses(runs, capsys):
    assert_refused(capsys, ["rl", f"run_dir={runs / 'rl'}", *RL, "seed=5"], runs, "already holds an RL run", "resume=true")


def test_rl_into_a_pretraining_folder_refuses(runs, capsys):
    assert_refused(capsys, ["rl", f"run_dir={runs / 'pretrain'}", *RL], runs, "already holds a pretraining run")


def test_finetune_with_a_taken_name_refuses_and_a_derived_name_moves_on(runs, capsys):
    argv = ["finetune", str(runs / "pretrain"), "steps=2", "eval_every=1", "threads=1", "logger.mode=disabled"]
    assert main([*argv, "name=first"]) == 0
    assert_refused(capsys, [*argv, "name=first"], runs, "already holds a fine-tuning run", "pick a new name")
    assert main(argv) == 0 and main(argv) == 0  # no name: a fresh folder each time, never the previous one
    folders = sorted(p.name for p in (runs / "pretrain" / "finetune").iterdir())
    assert len(folders) == 3 and folders[0] == "first" and folders[2] == folders[1] + "-2", folders


def test_default_run_folder_is_fresh_even_in_the_same_second(runs, monkeypatch):
    from mmssl.train import pretrain

    monkeypatch.chdir(runs)
    shutil.copytree(runs / "pretrain", runs / "runs" / "same")
    before = _files(runs / "runs" / "same")
    monkeypatch.setattr(pretrain, "default_run_dir", lambda cfg: pretrain.Path("runs") / "same")  # same second
    assert main(["pretrain", *tiny_overrides("x", "seed=3")[1:]]) == 0  # without run_dir
    assert _files(runs / "runs" / "same") == before
    assert (runs / "runs" / "same-2" / "summary.json").exists()
    assert json.loads((runs / "runs" / "same-2" / "summary.json").read_text())["train/steps"] == 6


def test_fresh_folders_are_distinct_while_both_held(tmp_path):
    a = run_folder.claim(None, "pretrain", default=lambda: tmp_path / "r")
    b = run_folder.claim(None, "pretrain", default=lambda: tmp_path / "r")
    assert (a.path.name, b.path.name) == ("r", "r-2")
    a.release(), b.release()
    assert not (a.path / "run.lock").exists() and not (b.path / "run.lock").exists()


# -- resume ------------------------------------------------------------------------------------------------

def test_resume_with_every_checkpoint_damaged_stops_and_keeps_them(runs, capsys):
    ckpts = checkpoint.checkpoints(runs / "pretrain" / "checkpoints")
    for path in ckpts:
        path.write_bytes(path.read_bytes()[:500])
    assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")], runs,
             "every checkpoint", "step_00000003.pt (fails its checksum)", "step_00000006.pt (fails its checksum)",
             "nothing was changed")


def test_resume_falls_back_past_a_damaged_newest(runs, capsys):
    newest = checkpoint.checkpoints(runs / "pretrain" / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:500])
    assert main(["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")]) == 0
    assert "resuming from the earlier step_00000003.pt (the damaged file is kept)" in capsys.readouterr().err
    assert checkpoint.load(newest)["step"] == 6  # rewritten by the resumed run itself, never pruned before


@pytest.mark.parametrize("override, key", [
    ("trainer.optimizer=sgd", "trainer.optimizer"), ("encoder.image.width=8", "encoder.image.width"),
    ("objective=byol", "objective.byol.name"), ("data.batch_size=16", "data.batch_size"), ("seed=1", "seed"),
    ("trainer.steps=9", "trainer.steps")])
def test_resume_with_a_changed_key_refuses_listing_it(runs, capsys, override, key):
    err = assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "pretrain", "resume=true", override)], runs,
                   "training-defining key", key, "resume_override=[")
    assert "nothing was written" in err


def test_resume_override_allows_the_listed_keys(runs):
    assert main(["pretrain", *tiny_overrides(runs / "pretrain", "resume=true", "trainer.steps=9",
                                             "resume_override=[trainer.steps]")]) == 0
    assert checkpoint.latest(runs / "pretrain" / "checkpoints")[1]["step"] == 9


@pytest.mark.parametrize("override, key", [("agent.num_envs=4", "agent.num_envs"), ("env=pendulum", "env.id"),
                                           ("agent.learning_rate=0.01", "agent.learning_rate")])
def test_rl_resume_with_a_changed_key_refuses(runs, capsys, override, key):
    assert_refused(capsys, ["rl", f"run_dir={runs / 'rl'}", *RL, "resume=true", override], runs,
             "training-defining key", key)


def test_resume_of_another_kind_refuses(runs, capsys):
    assert_refused(capsys, ["rl", f"run_dir={runs / 'pretrain'}", *RL, "resume=true"], runs,
             "holds a pretraining run, not an RL run", "mmssl pretrain resume=true")
    assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "rl", "resume=true")], runs,
             "holds an RL run, not a pretraining run", "mmssl rl resume=true")


def test_resume_without_a_checkpoint_refuses(runs, capsys):
    shutil.rmtree(runs / "pretrain" / "checkpoints")
    assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")], runs, "no checkpoint",
             "config.yaml")
    assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "typo", "resume=true")], runs, "does not exist")
    assert_refused(capsys, ["rl", f"run_dir={runs / 'nowhere'}", *RL, "resume=true"], runs, "does not exist")
    os.makedirs(runs / "empty")
    assert_refused(capsys, ["rl", f"run_dir={runs / 'empty'}", *RL, "resume=true"], runs, "no checkpoint", "holds no run")


# -- the lock ----------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from mmssl.train.run_folder import RunLock
    RunLock(sys.argv[1], "pretrain").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_process_on_the_folder_refuses_at_once(runs, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(runs / "pretrain")], stdout=subprocess.PIPE,
                              text=True, env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        record = json.loads((runs / "pretrain" / "run.lock").read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        assert_refused(capsys, ["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")], runs,
                 f"in use by pid {holder.pid} on {socket.gethostname()}")
    finally:
        holder.kill()
        holder.wait()
    # the killed holder left its lock file behind: stale, taken over, and released at the end of the run
    assert (runs / "pretrain" / "run.lock").exists()
    assert main(["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")]) == 0
    assert "taking over the stale lock of pid" in capsys.readouterr().err
    assert not (runs / "pretrain" / "run.lock").exists()


def test_a_lock_from_another_host_is_not_taken_over(runs, capsys):
    lock = runs / "rl" / "run.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "kind": "rl", "started": "yesterday"}))
    assert_refused(capsys, ["rl", f"run_dir={runs / 'rl'}", *RL, "resume=true"], runs, "locked by pid 1 on elsewhere.example",
             "delete")


def test_lock_in_process_excludes_and_releases(tmp_path):
    first = run_folder.RunLock(tmp_path, "rl").acquire()
    with pytest.raises(run_folder.RunFolderError, match=f"in use by pid {os.getpid()}"):
        run_folder.RunLock(tmp_path, "rl").acquire()
    first.release()
    run_folder.RunLock(tmp_path, "rl").acquire().release()


# -- atomic writes and the single final checkpoint -----------------------------------------------------------

def test_every_run_file_is_written_atomically(runs, monkeypatch):
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(os.path.basename(dst)), real(src, dst))[1])
    assert main(["pretrain", *tiny_overrides(runs / "pretrain", "resume=true", "eval.plot=true")]) == 0
    for name in ("config.yaml", "summary.json", "probes.md", "metrics.jsonl"):
        assert name in replaced, (name, replaced)
    assert any(name.endswith(".png") for name in replaced), replaced


def test_a_full_disk_never_leaves_a_partial_summary(runs, capsys, monkeypatch):
    summary = runs / "pretrain" / "summary.json"
    before = summary.read_bytes()
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if ".summary.json.tmp" in str(path):
            f.write(b"{\n  \"eval/")  # some bytes reach the disk, then it is full
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(mmssl.io, "open", full_disk, raising=False)
    assert main(["pretrain", *tiny_overrides(runs / "pretrain", "resume=true")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and "summary.json: No space left" in err, err
    assert summary.read_bytes() == before  # the previous summary, whole
    assert not list((runs / "pretrain").glob(".*tmp*")) and not (runs / "pretrain" / "run.lock").exists()


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = mmssl.io.atomic_write(tmp_path / "config.yaml", "old: 1\n")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(mmssl.io.WriteError, match="could not write .*config.yaml: No space left"):
        mmssl.io.atomic_write(path, "new: 2\n" * 1000)
    assert path.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_final_checkpoint_written_once(tmp_path, monkeypatch):
    saved, real = [], checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda state, path: (saved.append(path.name), real(state, path))[1])
    fit(compose("pretrain", tiny_overrides(tmp_path)), tmp_path)  # 6 steps, checkpoint every 3
    assert saved == ["step_00000003.pt", "step_00000006.pt"]


def test_prune_keeps_damaged_and_newer_checkpoints(tmp_path):
    paths = [checkpoint.save({"step": torch.tensor(s)}, tmp_path / f"step_{s:08d}.pt") for s in (1, 2, 3, 4, 5)]
    paths[1].write_bytes(b"torn")  # step 2 damaged
    with pytest.warns(UserWarning, match="step_00000002.pt fails its checksum.*keeping it"):
        damaged = checkpoint.prune(tmp_path, keep=2, current=paths[3])  # just wrote step 4 (step 5: newer)
    assert damaged == [paths[1]]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "step_00000002.pt", "step_00000003.pt", "step_00000004.pt", "step_00000005.pt"]
