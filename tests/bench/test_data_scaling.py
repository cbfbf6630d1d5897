"""The data-scaling benchmark runs in its tiny mode (lazy folders, two DataLoader workers), so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_scaling_bench_runs_tiny(tmp_path):
    out = tmp_path / "data_scaling.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "data_scaling.py"), "--tiny", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["modality"], r["files"]) for r in rows] == [("image", 50), ("image", 100), ("audio", 50)]
    assert all(r["items_per_s"] > 0 and r["peak_rss_main_mb"] > 0 for r in rows)
    assert all(r["peak_rss_with_workers_mb"] >= r["rss_after_build_mb"] * 0.5 and r["workers_at_peak"] >= 1 for r in rows)
    assert set(result["growth"]) == {"image"} and result["growth"]["image"]["files"] == [50, 100]
