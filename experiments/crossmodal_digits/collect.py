"""Results table (mean ± sample sd over seeds) from the run folders' summary.json: `python collect.py RUN_DIR...`."""

import json
import sys
from pathlib import Path

import numpy as np

PAIRS = ["image_to_audio", "audio_to_image", "image_to_text", "text_to_image", "audio_to_text", "text_to_audio"]


def main(run_dirs: list[str]) -> None:
    runs = [json.loads((Path(d) / "summary.json").read_text()) for d in run_dirs]
    rows = [(f"retrieval {p.replace('_to_', '→')} R@{k}", f"eval/retrieval/{p}/R@{k}") for p in PAIRS for k in (1, 5)]
    rows += [("zero-shot image accuracy", "eval/zeroshot/image_accuracy"),
             ("zero-shot audio accuracy", "eval/zeroshot/audio_accuracy"),
             ("image linear probe", "eval/image/ssl/linear_probe_accuracy"),
             ("audio linear probe", "eval/audio/ssl/linear_probe_accuracy"),
             ("train seconds (wall)", "time/train_seconds")]
    print(f"| metric (test split: unseen voices, held-out images) | {' | '.join(Path(d).name for d in run_dirs)} | mean ± sd |")
    print("|---|" + "---:|" * (len(runs) + 1))
    for label, key in rows:
        vals = np.array([r[key] for r in runs])
        fmt = "{:.1f}" if key.startswith("time") else "{:.3f}"
        print(f"| {label} | {' | '.join(fmt.format(v) for v in vals)} | {fmt.format(vals.mean())} ± {fmt.format(vals.std(ddof=1))} |")


if __name__ == "__main__":
    main(sys.argv[1:])
