"""SIGKILL a pretraining run at random points and inside checkpoint writes; resumed == uninterrupted, bit for bit."""

import time

import pytest

from mmssl.config import compose
from tests.conftest import tiny_overrides
from tests.reliability.harness import KillStats, assert_identical, fit, kill_inside_save, kill_until, pretrain

STEPS = 24
RANDOM_KILLS = {"simclr": 8, "byol": 8}  # 16 random kills + 4 targeted ones below = 20 for pretraining


def _cfg(run_dir, objective):
    return compose("pretrain", tiny_overrides(run_dir, f"objective={objective}", f"trainer.steps={STEPS}",
                                              "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2",
                                              "trainer.log_every=4"))


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs (in this process) and how long each took."""
    out = {}
    for objective in RANDOM_KILLS:
        run = tmp_path_factory.mktemp(f"ref-{objective}")
        start = time.perf_counter()
        out[objective] = fit(_cfg(run, objective), run), time.perf_counter() - start
    return out


@pytest.mark.parametrize("objective", list(RANDOM_KILLS))
def test_random_kills_resume_bit_identical(tmp_path, references, objective):
    reference, seconds = references[objective]
    kills = RANDOM_KILLS[objective]
    stats = kill_until(lambda run_dir: _cfg(run_dir, objective), tmp_path, kills, max_delay=seconds / kills,
                       seed=10 * list(RANDOM_KILLS).index(objective), check=lambda run: assert_identical(reference, run))
    print(f"\n{objective}: {stats}")
    assert stats.kills == kills and not stats.corrupt, stats


@pytest.mark.parametrize("nth_save,nth_replace", [(2, 1), (5, 1), (3, 2), (7, 2)])
def test_kill_inside_checkpoint_write(tmp_path, references, nth_save, nth_replace):
    reference, _ = references["simclr"]
    stats: KillStats = kill_inside_save(_cfg(tmp_path, "simclr"), tmp_path, nth_save, nth_replace)
    assert stats.kills == 1 and not stats.corrupt, stats
    if nth_replace == 1:  # killed before the rename: only a hidden temp file, the step file never appeared
        assert stats.leftover_temp_files >= 1
    else:  # killed between rename and checksum: a complete file without its sidecar, which still loads
        assert stats.without_checksum >= 1
    assert_identical(reference, tmp_path)


def test_metrics_have_no_duplicates_after_kill(tmp_path, references):
    from mmssl.logging import read_metrics

    # through `mmssl pretrain`'s run(): step 4 is logged, then the kill lands before its checkpoint
    kill_inside_save(_cfg(tmp_path, "simclr"), tmp_path, nth_save=4, nth_replace=1, train=pretrain)
    steps = [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r]
    assert steps == list(range(4, STEPS + 1, 4)), steps


def test_temp_files_of_killed_writers_are_cleaned_up(tmp_path, references):
    kill_inside_save(_cfg(tmp_path, "simclr"), tmp_path, nth_save=3, nth_replace=1)  # then resumed to the end
    assert not list((tmp_path / "checkpoints").glob(".step_*"))
