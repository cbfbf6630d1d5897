"""Curves (PNG) and a results table from the runs in experiments/rl_core/runs/ (`python experiments/rl_core/report.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmssl.logging import read_metrics  # noqa: E402

HERE = Path(__file__).parent
RUNS = HERE / "runs"
#: plot name → (run-name prefixes, metric, label)
STUDIES = {"cartpole": (["cartpole"], "episodic_return", "episodic return"),
           "doorkey": (["doorkey"], "success_rate", "success rate"),
           "halfcheetah": (["halfcheetah"], "episodic_return", "episodic return"),
           "pixels": (["doorkey_pixels", "doorkey_pixels_curl"], "success_rate", "success rate")}


def smooth(values: list[float], k: int = 10) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v


def main() -> None:
    rows = []
    for study, (prefixes, key, label) in STUDIES.items():
        runs = sorted(p for prefix in prefixes for p in RUNS.glob(f"{prefix}_s*") if (p / "summary.json").exists())
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for run in runs:
            records = [r for r in read_metrics(run) if key in r]
            steps = [r["global_step"] for r in records]
            y = smooth([r[key] for r in records])
            ax.plot(steps[len(steps) - len(y):], y, label=run.name)
            s = json.loads((run / "summary.json").read_text())
            rows.append((run.name, s["global_step"], s["train_return_last100"], s["train_success_last100"],
                         s["eval_return_mean"], s["eval_success_rate"], s.get("probe_state_r2"),
                         s["env_steps_per_second"], s["train_wall_clock_s"]))
        ax.set_xlabel("env steps (frames)")
        ax.set_ylabel(f"{label} (10-update moving mean)")
        ax.set_title(study)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(HERE / f"{study}.png", dpi=120)
        plt.close(fig)
    print("| run | frames | train return (last 100 ep.) | train success | eval return (10 ep.) | eval success | "
          "state probe R² | env-steps/s | wall-clock s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
