"""Reinforcement learning: PPO agents with registry encoders, auxiliary objectives and intrinsic rewards."""
