"""The data stage: a task's offline dataset (PAPER.md section 5) in `<workdir>/dataset/`.

Binary: `experiments/generate_data.py` (`wmjax-generate-data`). `generate` rolls out the config's
behaviour policy batched on the device and writes the dataset, a PNG grid of rendered frames
beside it (`<workdir>/dataset_preview.png`) and returns a summary (sizes, statistics, timings and
a task-specific coverage figure). A valid dataset generated with the same task, policy, seed and
sizes is kept (pipelines can call it unconditionally); one made with other settings is replaced
only with `overwrite`.
"""

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from wmjax import checks
from wmjax import data as data_lib
from wmjax import io
from wmjax.data import dataset as dataset_lib
from wmjax.experiment import layout


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every invalid `data` setting (and any non-finite number)."""
  d = config.data
  errors = [f'data.{name} must be >= 1; got {d[name]}'
            for name in ('num_trajectories', 'trajectory_length', 'batch_size')
            if int(d[name]) < 1]
  errors += checks.config_problems(
      config, {'data.val_fraction': {'low': 0, 'high': 1, 'high_open': True}})
  checks.raise_config_errors(errors, 'data config')


def task_summary(env: Any, states: np.ndarray) -> dict[str, float]:
  """Task-specific coverage figures from the (N, T+1, S) states."""
  out = {}
  if env.name == 'wall':
    from wmjax.envs import wall as wall_lib  # pylint: disable=g-import-not-at-top
    # A trajectory crosses the door when it visits both rooms.
    x = states[..., 0]
    crossed = np.any(x < wall_lib.WALL_X0, axis=1) & np.any(x > wall_lib.WALL_X1, axis=1)
    out['door_crossing_fraction'] = float(crossed.mean())
  elif env.name == 'pusht':
    # The block stops dead when not pushed, so a step that moves it is a contact step.
    moved = np.abs(np.diff(states[..., 2:5], axis=1)).max(axis=-1) > 1e-3
    out['contact_step_fraction'] = float(moved.mean())
    out['trajectories_with_contact'] = float(moved.any(axis=1).mean())
  elif env.name == 'pointmaze':
    from wmjax.envs import pointmaze as maze_lib  # pylint: disable=g-import-not-at-top
    # Free cell (r, c) spans qpos [r - 0.7, r + 0.3] x [c - 0.7, c + 0.3].
    cells = np.floor(states[..., :2] + maze_lib.BODY_OFFSET - 0.5).astype(np.int64)
    free = ~maze_lib.parse_layout(env.layout)
    rows, cols = np.clip(cells[..., 0], 0, free.shape[0] - 1), np.clip(
        cells[..., 1], 0, free.shape[1] - 1)
    flat = (rows * free.shape[1] + cols)  # (N, T+1) cell ids
    visited = np.zeros(free.size, bool)
    visited[flat.ravel()] = True
    out['cell_coverage'] = float((visited & free.ravel()).sum() / free.sum())
    out['mean_cells_per_trajectory'] = float(np.mean([len(np.unique(f)) for f in flat]))
  return out


def save_preview(env: Any, states: np.ndarray, path: str, image_size: int,
                 rows: int = 4, cols: int = 8) -> None:
  """Saves a rows x cols grid of frames (rows: trajectories, cols: evenly spaced steps)."""
  from wmjax.envs import render as render_lib  # pylint: disable=g-import-not-at-top
  rows = min(rows, states.shape[0])
  steps = np.linspace(0, states.shape[1] - 1, cols).round().astype(np.int64)
  picked = states[:rows][:, steps]  # (rows, cols, S)
  render = jax.jit(jax.vmap(jax.vmap(lambda s: env.render(s, image_size))))
  imgs = np.asarray(render_lib.to_uint8(render(picked)))  # (rows, cols, H, W, 3)
  pad = 2
  h, w = imgs.shape[2:4]
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
  for i in range(rows):
    for j in range(cols):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = imgs[i, j]
  with io.atomic_path(path) as tmp:
    try:
      from wmjax import media  # pylint: disable=g-import-not-at-top
      media.save_png(tmp, grid)
    except (ImportError, AttributeError):
      import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
      iio.imwrite(tmp, grid)


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def generate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
             progress: bool = True, preview: bool = True) -> dict[str, Any]:
  """Generates (or reuses) `<workdir>/dataset/` for `config`.

  Returns:
    A summary dictionary; 'skipped' is True when an identical dataset already existed.

  Holds the workdir lock (wmjax/io.py) meanwhile; taking it removes temporary directories of
  writers that died, e.g. a `.dataset.tmp-*` of an interrupted --overwrite.

  Raises:
    FileExistsError: a dataset made with other settings (or an invalid one) is in the way
      and `overwrite` is False.
    wmjax.io.WorkdirLockedError: another process writes to `workdir`.
  """
  check_config(config)
  with io.workdir_lock(workdir, 'generate_data'):
    return _generate(config, workdir, overwrite, progress, preview)


def _generate(config, workdir, overwrite, progress, preview):
  from wmjax import envs  # pylint: disable=g-import-not-at-top
  from wmjax.data import policies  # pylint: disable=g-import-not-at-top

  path = os.path.join(workdir, layout.DATASET_DIR)
  spec = layout.generation_spec(config)
  if os.path.exists(path) and not overwrite:
    if dataset_lib.matches_generation(path, spec, task=config.task):
      print(f'{path} already holds a valid {config.task} dataset with the same settings; '
            'nothing to do (pass --overwrite to regenerate).')
      return {'skipped': True, 'path': path}
    try:
      found = dataset_lib.read_meta(path).get('generation')
      why = f'it was generated with {found}, this config asks for {spec}'
    except (FileNotFoundError, ValueError) as e:
      why = f'it is not a valid dataset ({e})'
    raise FileExistsError(f'{path} exists but {why}; pass --overwrite to replace it.')

  env = envs.load(config.task, clip_actions=config.clip_actions)
  policy = policies.load_policy(config.data.policy, env)
  t0 = time.perf_counter()
  arrays = data_lib.collect(env, policy, jax.random.key(config.data.seed),
                            config.data.num_trajectories, config.data.trajectory_length,
                            config.data.batch_size, progress=progress)
  t_collect = time.perf_counter() - t0
  t0 = time.perf_counter()
  meta = dataset_lib.write_dataset(
      path, arrays['states'], arrays['proprio'], arrays['actions'], task=config.task,
      policy=config.data.policy, seed=config.data.seed, generation=spec, config=config,
      overwrite=overwrite)
  t_write = time.perf_counter() - t0
  if preview:
    save_preview(env, arrays['states'], os.path.join(workdir, layout.PREVIEW_FILE),
                 config.image_size)

  n, t = meta['num_trajectories'], meta['trajectory_length']
  summary = {
      'skipped': False,
      'path': path,
      'num_trajectories': n,
      'trajectory_length': t,
      'env_steps': n * t,
      'sizes (S, P, A)': (meta['state_size'], meta['proprio_size'], meta['action_size']),
      'disk_mb': _dir_size(path) / 2**20,
      'collect_s': t_collect,
      'steps_per_s': n * t / max(t_collect, 1e-9),
      'write_s': t_write,
      **task_summary(env, arrays['states']),
      'stats': meta['stats'],
  }
  return summary


def print_summary(summary: dict[str, Any]) -> None:
  """The summary `generate` returns, one entry per line."""
  for k, v in summary.items():
    if k == 'stats':
      for sk, sv in v.items():
        print(f'  {sk:<24} {np.array2string(np.asarray(sv), precision=3)}')
    elif isinstance(v, float):
      print(f'{k:<26} {v:.4g}')
    else:
      print(f'{k:<26} {v}')

