"""PushT config: `--config experiments/configs/pusht.py:<variant>`.

Variants: test (seconds) | cpu (default; 2 CPU cores) | gpu (one GPU) | paper (PAPER.md section 5).
"""

import ml_collections

from experiments.configs import common

# Offline data per variant. PAPER.md section 5: 18.5k noisy replays of expert pushes. Their
# lengths vary; wmjax uses a fixed 150 env steps (15 s at 10 Hz), about the length of a
# typical PushT demonstration. `cpu`: 1,000 trajectories x 100 steps.
_DATA = {
    'test': dict(num_trajectories=8, trajectory_length=20, batch_size=8),
    'cpu': dict(num_trajectories=1000, trajectory_length=100, batch_size=250),
    'gpu': dict(num_trajectories=4000, trajectory_length=100, batch_size=4000),
    'paper': dict(num_trajectories=18500, trajectory_length=150, batch_size=4625),
}


def get_config(variant: str = 'cpu') -> ml_collections.ConfigDict:
  """PushT config for `variant` (test | cpu | gpu | paper)."""
  c = common.base_config('pusht', variant)
  c.num_hist = 3  # History frames of the predictor (PAPER.md section 2: 3 for PushT).

  c.data.policy = 'pusht_expert'
  c.data.update(_DATA[variant])
  if variant == 'cpu':
    c.train.steps = 8000  # num_hist 3 costs ~3x a Wall step: ~20-25 min on 2 CPU cores.
    # The block angle needs a longer encoder pretraining than positions: after 600 steps a linear
    # probe read no angle from the tokens (R^2 of cos / sin ~0; positions 0.73-0.89), after 3,000
    # 0.85 / 0.89 (positions 0.97-0.98). A success needs the angle within 20 degrees.
    c.train.encoder_pretrain_steps = 3000
  if variant == 'gpu':
    c.train.steps = 3500  # Batch 128: 448k windows (cpu: 256k).
    # As for cpu: after 1,000 steps of batch 128 (H200, 2026-11-30) the probe read no angle
    # (R^2 of cos / sin 0.02 / -0.15; agent 0.99, block position 0.91-0.92).
    c.train.encoder_pretrain_steps = 3000

  # Planning (PAPER.md section 3): alpha 1, CEM 30 iterations and a budget of 30 executed model
  # actions are the common defaults (goals lie 25 env steps = 5 model actions ahead).
  return c
