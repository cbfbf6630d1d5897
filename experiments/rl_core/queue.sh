#!/usr/bin/env bash
# The learning-target runs, one at a time (2 shared CPU cores):
#   JOBS="doorkey:1 cartpole:1 doorkey:2 doorkey:3" bash experiments/rl_core/queue.sh
# Run folders, logs and wallclock.txt go to runs/rl_core/ (not versioned); report.py summarises them.
set -u
cd "$(dirname "$0")/../.."
out=runs/rl_core
mkdir -p "$out"
run() {  # run NAME overrides…
  local name=$1; shift
  local start=$(date +%s)
  mmssl rl run_dir="$out/$name" logger.mode=disabled log_every=${LOG_EVERY:-10} "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - start ))" >> "$out/wallclock.txt"
}
for job in ${JOBS:-doorkey:1 cartpole:1}; do
  seed=${job#*:}
  case ${job%%:*} in
    doorkey) run doorkey_s$seed env=minigrid_doorkey_5x5 agent=ppo_minigrid agent_encoder=minigrid seed=$seed ;;
    cartpole) run cartpole_s$seed env=cartpole seed=$seed ;;
    halfcheetah) LOG_EVERY=2 run halfcheetah_s$seed env=halfcheetah agent=ppo_continuous seed=$seed \
      agent.total_timesteps=${STEPS:-1000000} eval.max_video_frames=100 ;;  # needs pip install -e ".[mujoco]"
    doorkey_pixels) run doorkey_pixels_s$seed env=minigrid_pixels agent=ppo_pixels agent_encoder=impala_cnn seed=$seed \
      agent.total_timesteps=${FRAMES:-30000} ;;
    doorkey_pixels_curl) run doorkey_pixels_curl_s$seed env=minigrid_pixels agent=ppo_pixels agent_encoder=impala_cnn \
      objective=rl_curl seed=$seed agent.total_timesteps=${FRAMES:-30000} ;;
  esac
done
