"""Benchmarks are not tests: this only checks that each bench script runs on a tiny budget."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pretrain_simclr_bench_runs_tiny(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "pretrain_simclr.py"), "--tiny", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["mmssl_images_per_s"] > 0 and result["gflops_per_step"] > 0
    assert result["precision_key"] in ("trainer.precision", "trainer.amp") and result["dtype"] == "float32"
    assert 0 < result["mfu_vs_matmul_peak"] < 2 and 0 < result["share_of_bare_model"] < 2
    # the bare model as mmssl runs it skips layer4's dead taps at 32×32: fewer FLOPs than torchvision's network
    every_tap = result["bare_model_every_tap"]
    assert every_tap["images_per_s"] > 0 and every_tap["bare_model_speedup"] > 0
    assert 0.7 < result["bare_model"]["gflops_per_step"] / every_tap["gflops_per_step"] < 0.95
    assert 0 <= result["probe_accuracy"]["mmssl"] <= 1


def test_scaling_bench_runs_tiny(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--tiny", "--out", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    rows = json.loads((tmp_path / "scaling_batch.json").read_text())
    assert [r["batch"] for r in rows] == [4] and all(r["images_per_s"] > 0 for r in rows)
    assert (tmp_path / "scaling_batch.png").stat().st_size > 1000


def test_rl_bench_runs_tiny(tmp_path):
    out = tmp_path / "rl.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "rl_ppo.py"), "--tiny", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["steps_per_s"]["mmssl"]["mean"] > 0 and result["steps_per_s"]["mmssl_rnd"]["mean"] > 0
    assert result["steps_per_run"] == 1024 and len(result["steps_per_s"]["mmssl"]["values"]) == 1


def test_rl_scaling_bench_runs_tiny(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "rl_scaling.py"), "--tiny", "--out", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    rows = json.loads((tmp_path / "rl_scaling_cartpole.json").read_text())
    assert [(r["num_envs"], r["asynchronous"]) for r in rows] == [(1, False), (2, False), (1, True), (2, True)]
    assert all(r["steps_per_s"] > 0 for r in rows)


def test_minigrid_bench_runs_tiny(tmp_path):
    out = tmp_path / "minigrid.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "minigrid_ppo.py"), "--tiny", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["env_steps_per_s"]["mmssl"] > 0 and result["env_steps_per_s"]["minigrid"] > 0
    assert result["doorkey8x8"]["steps_per_s"]["mmssl"]["mean"] > 0
    assert result["pixels56"]["steps_per_s"]["mmssl"]["mean"] > 0
