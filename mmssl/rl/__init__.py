"""Reinforcement learning: PPO agents with registry encoders, auxiliary objectives and intrinsic rewards."""

from mmssl.rl import aux  # noqa: F401  (registers the RL auxiliary objectives: curl, atc, spr, …)
