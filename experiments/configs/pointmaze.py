"""PointMaze (D4RL U-maze) config: `--config experiments/configs/pointmaze.py:<variant>`.

Variants: test (seconds) | cpu (default; 2 CPU cores) | gpu (one GPU) | paper (PAPER.md section 5).
"""

import ml_collections

from experiments.configs import common

# Offline data per variant (PAPER.md section 5: 2,000 random trajectories x 100 steps;
# `cpu` keeps the length and halves the count).
_DATA = {
    'test': dict(num_trajectories=8, trajectory_length=20, batch_size=8),
    'cpu': dict(num_trajectories=1000, trajectory_length=100, batch_size=250),
    'gpu': dict(num_trajectories=2000, trajectory_length=100, batch_size=2000),
    'paper': dict(num_trajectories=2000, trajectory_length=100, batch_size=2000),
}


def get_config(variant: str = 'cpu') -> ml_collections.ConfigDict:
  """PointMaze config for `variant` (test | cpu | gpu | paper)."""
  c = common.base_config('pointmaze', variant)
  c.num_hist = 3  # History frames of the predictor (PAPER.md section 2: 3 for PointMaze).

  c.data.policy = 'random'
  c.data.update(_DATA[variant])
  if variant == 'cpu':
    c.train.steps = 4000  # num_hist 3 costs ~3x a Wall step: ~15 min on 2 CPU cores.

  # Planning (PAPER.md section 3): no proprio term in the cost (alpha 0); CEM and GradCEM run 10
  # iterations. Budget: 10 executed model actions (50 env steps). DINO-WM's problems need at
  # most 8 for a controller that follows the U (docs/fidelity.md); at 50 every planner that
  # keeps moving eventually crosses the goal disk, so the planners did not separate.
  c.plan.alpha = 0.0
  if variant != 'test':
    c.plan.cem.num_iterations = 10
    c.plan.gradcem.num_iterations = 10
    c.plan.budget = 10
  return c
