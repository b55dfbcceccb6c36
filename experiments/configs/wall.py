"""Wall (DINO-WM DotWall) config: `--config experiments/configs/wall.py:<variant>`.

Variants: test (seconds) | cpu (default; 2 CPU cores) | gpu (one GPU) | paper (PAPER.md section 5).
"""

import ml_collections

from experiments.configs import common

# Offline data per variant (PAPER.md section 5: 1,920 random trajectories x 50 steps; that
# size is already cheap on a CPU, so `cpu` keeps it).
_DATA = {
    'test': dict(num_trajectories=8, trajectory_length=20, batch_size=8),
    'cpu': dict(num_trajectories=1920, trajectory_length=50, batch_size=480),
    'gpu': dict(num_trajectories=1920, trajectory_length=50, batch_size=1920),
    'paper': dict(num_trajectories=1920, trajectory_length=50, batch_size=1920),
}


def get_config(variant: str = 'cpu') -> ml_collections.ConfigDict:
  """Wall config for `variant` (test | cpu | gpu | paper)."""
  c = common.base_config('wall', variant)
  c.num_hist = 1  # History frames of the predictor (PAPER.md section 2: 1 for Wall).

  c.data.policy = 'random'
  c.data.update(_DATA[variant])

  # Planning (PAPER.md section 3): alpha 1 (the common default); CEM and GradCEM run 10 iterations.
  if variant != 'test':
    c.plan.cem.num_iterations = 10
    c.plan.gradcem.num_iterations = 10
  return c
