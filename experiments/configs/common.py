"""Shared experiment configuration; task files (pusht.py, pointmaze.py, wall.py) build on it.

Every binary takes the same task config, e.g.
  python experiments/generate_data.py --config experiments/configs/wall.py:cpu --workdir runs/wall
  python experiments/train_world_model.py --config experiments/configs/wall.py:cpu --workdir runs/wall
Variants: `test` (seconds, used by tests/CI), `cpu` (the embedded default, 2 CPU cores), `paper`
(the paper's sizes, for a GPU).
"""

import ml_collections

VARIANTS = ('test', 'cpu', 'paper')


def check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise ValueError(f'Unknown config variant {variant!r}; choose one of {VARIANTS}.')
  return variant


def base_config(task: str, variant: str) -> ml_collections.ConfigDict:
  """Fields common to every task; task files override per variant."""
  check_variant(variant)
  c = ml_collections.ConfigDict()
  c.task = task            # Registered task name (wmjax.envs.load).
  c.variant = variant      # test | cpu | paper.
  c.seed = 0               # Master seed of the run.
  c.frameskip = 5          # Raw env steps per model action (paper: 5).
  c.image_size = 64        # Rendered image side in pixels (paper path: 224).

  # Offline dataset (experiments/generate_data.py).
  c.data = ml_collections.ConfigDict()
  c.data.num_trajectories = 8     # Behaviour trajectories to roll out.
  c.data.trajectory_length = 50   # Env steps per trajectory.
  c.data.batch_size = 256         # Trajectories simulated at once on device.
  c.data.val_fraction = 0.1       # Fraction of trajectories held out for validation.
  c.data.policy = 'random'        # Behaviour policy name (see wmjax.data.policies).
  return c
