#!/usr/bin/env bash
# Three seeds of the tri-modal binding run, one after another (2-core machine: one run at a time).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-60}
for seed in 0 1 2; do
  /usr/bin/time -f "seed $seed: %U s user, %S s sys, %e s wall" \
    mmssl pretrain encoder=trimodal data=trimodal_digits objective=bind trainer.steps=$STEPS \
      trainer.warmup_steps=10 trainer.log_every=10 trainer.progress=false threads=1 seed=$seed \
      eval.baselines=false eval.plot=false logger.mode=disabled run_dir=runs/crossmodal_digits/seed$seed
done
python experiments/crossmodal_digits/collect.py runs/crossmodal_digits/seed*
