"""Training windows from an offline dataset: split, normalise, sample, render.

A window (DINO-WM convention, PAPER.md section 2) is num_hist + 1 frames spaced
`frameskip` env steps apart, starting at env step s of one trajectory:

  frame k      = state at env step s + k * frameskip,           k = 0 .. num_hist
  model action = concat(raw actions s + k * frameskip .. s + (k+1) * frameskip - 1),
                 k = 0 .. num_hist - 1, shape (frameskip * A,): the actions that lead
                 from frame k to frame k + 1.

Batches are dictionaries
  {'state': (B, num_hist+1, S) raw, 'proprio': (B, num_hist+1, P) normalised,
   'actions': (B, num_hist, frameskip*A) normalised,
   'pixels': (B, num_hist+1, H, W, 3) uint8 (added by `add_pixels`)}.
Normalisation uses the dataset's statistics (meta.json), action stats tiled over
frameskip: normalised = (raw - mean) / std (`wmjax.envs.execution.Normalizer`, the one
normaliser, which also executes normalised plans).

Arrays are put on device once (`to_device`); sampling and rendering happen inside jit.
"""

import functools
from typing import Any, Iterator, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.data import dataset as dataset_lib
from wmjax.envs import base
from wmjax.envs import execution
from wmjax.envs import render as render_lib

Batch = dict[str, jax.Array]


class Stats(NamedTuple):
  """Normalisation statistics of a dataset (raw action, per channel)."""

  action_mean: jax.Array   # (A,)
  action_std: jax.Array    # (A,)
  proprio_mean: jax.Array  # (P,)
  proprio_std: jax.Array   # (P,)
  state_mean: jax.Array    # (S,)
  state_std: jax.Array     # (S,)


def stats_from_meta(meta: Mapping[str, Any]) -> Stats:
  """Stats of a dataset's meta.json as float32 jnp arrays."""
  s = meta['stats']
  return Stats(*(jnp.asarray(s[f], jnp.float32) for f in Stats._fields))


def nominal_stats(env: base.Env) -> Stats:
  """Stats without a dataset: the env's nominal action mean / std, identity proprio and state."""
  zeros = lambda n: jnp.zeros((n,), jnp.float32)
  ones = lambda n: jnp.ones((n,), jnp.float32)
  return Stats(jnp.asarray(env.action_mean, jnp.float32), jnp.asarray(env.action_std, jnp.float32),
               zeros(env.proprio_size), ones(env.proprio_size), zeros(env.state_size),
               ones(env.state_size))


class WindowArrays(NamedTuple):
  """A dataset on device, ready for jitted window sampling.

  Attributes:
    states: (N, T+1, S) raw.
    proprio: (N, T+1, P) raw.
    actions: (N, T, A) raw.
    stats: normalisation statistics.
    visual: None, or (N, T+1, tokens, Dv) the frozen encoder's tokens of every frame, computed
      once (`wmjax.training.token_cache`); windows then carry them instead of being rendered and
      encoded at every step.
  """

  states: jax.Array
  proprio: jax.Array
  actions: jax.Array
  stats: Stats
  visual: Optional[jax.Array] = None


def to_device(ds: dataset_lib.Dataset, device: Any = None) -> WindowArrays:
  """Copies a dataset's arrays to a device once."""
  put = functools.partial(jax.device_put, device=device)
  return WindowArrays(put(ds.states), put(ds.proprio), put(ds.actions),
                      jax.tree.map(put, stats_from_meta(ds.meta)))


def split(ds: dataset_lib.Dataset, val_fraction: float,
          seed: int) -> tuple[dataset_lib.Dataset, dataset_lib.Dataset]:
  """Splits by trajectory into (train, val) with a seeded permutation.

  Both halves keep the full dataset's normalisation statistics. With val_fraction > 0
  the validation half has at least one trajectory; the training half must keep one.

  Args:
    ds: the dataset.
    val_fraction: in [0, 1).
    seed: permutation seed.
  """
  n = ds.num_trajectories
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}.')
  n_val = int(round(n * val_fraction))
  if val_fraction > 0:
    n_val = max(n_val, 1)
  if n_val >= n:
    raise ValueError(f'val_fraction {val_fraction} of {n} trajectories leaves none to train on.')
  perm = np.random.default_rng(seed).permutation(n)
  val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

  def take(idx, name):
    meta = dict(ds.meta, num_trajectories=int(len(idx)), split=name,
                trajectory_indices=idx.tolist())
    return dataset_lib.Dataset(ds.states[idx], ds.proprio[idx], ds.actions[idx], meta)

  return take(train_idx, 'train'), take(val_idx, 'val')


def _check_window(arrays: WindowArrays, num_hist: int, frameskip: int) -> int:
  if num_hist < 1 or frameskip < 1:
    raise ValueError(f'num_hist and frameskip must be >= 1, got {num_hist}, {frameskip}.')
  span = num_hist * frameskip
  t = arrays.actions.shape[1]
  if t < span:
    raise ValueError(f'Trajectories of {t} steps are shorter than one window of '
                     f'num_hist * frameskip = {span} steps.')
  if arrays.actions.shape[0] < 1:
    raise ValueError('Cannot take windows from an empty dataset.')
  return span


def gather_windows(arrays: WindowArrays, traj: jax.Array, start: jax.Array, num_hist: int,
                   frameskip: int) -> Batch:
  """Windows at given trajectories and start steps (jittable; num_hist/frameskip static).

  Args:
    arrays: dataset on device.
    traj: (B,) int trajectory indices.
    start: (B,) int start env steps, 0 <= start <= T - num_hist * frameskip.
    num_hist: history frames per window (the window holds num_hist + 1 frames).
    frameskip: env steps between frames.

  Returns:
    {'state': (B, num_hist+1, S) raw, 'proprio': (B, num_hist+1, P) normalised,
     'actions': (B, num_hist, frameskip*A) normalised}, and 'visual' (B, num_hist+1, tokens,
    Dv) when `arrays` carries the encoder's tokens.
  """
  _check_window(arrays, num_hist, frameskip)
  b = traj.shape[0]
  frame_idx = start[:, None] + frameskip * jnp.arange(num_hist + 1)   # (B, num_hist+1)
  act_idx = start[:, None] + jnp.arange(num_hist * frameskip)         # (B, num_hist*fs)
  states = arrays.states[traj[:, None], frame_idx]
  proprio = arrays.proprio[traj[:, None], frame_idx]
  raw = arrays.actions[traj[:, None], act_idx]                        # (B, num_hist*fs, A)
  # Section 2: a model action is frameskip raw actions concatenated.
  actions = raw.reshape(b, num_hist, frameskip * raw.shape[-1])
  normalizer = execution.normalizer_from_stats(arrays.stats)
  batch = {
      'state': states,
      'proprio': normalizer.normalize_proprio(proprio),
      'actions': normalizer.normalize_actions(actions),
  }
  if arrays.visual is not None:
    batch['visual'] = arrays.visual[traj[:, None], frame_idx]
  return batch


@functools.partial(jax.jit, static_argnames=('batch_size', 'num_hist', 'frameskip'))
def sample_windows(arrays: WindowArrays, key: jax.Array, batch_size: int, num_hist: int,
                   frameskip: int) -> Batch:
  """Uniformly random windows (every (trajectory, start) pair equally likely).

  Args:
    arrays: dataset on device.
    key: PRNG key.
    batch_size, num_hist, frameskip: static sizes.

  Returns:
    A batch as in `gather_windows`.
  """
  span = _check_window(arrays, num_hist, frameskip)
  n, t = arrays.actions.shape[:2]
  k_traj, k_start = jax.random.split(key)
  traj = jax.random.randint(k_traj, (batch_size,), 0, n)
  start = jax.random.randint(k_start, (batch_size,), 0, t - span + 1)
  return gather_windows(arrays, traj, start, num_hist, frameskip)


def add_pixels(env: base.Env, batch: Batch, image_size: int) -> Batch:
  """Adds 'pixels' (..., H, W, 3) uint8 rendered from batch['state'] (..., S). Jittable."""
  state = batch['state']
  flat = state.reshape(-1, state.shape[-1])
  with jax.named_scope('render'):
    imgs = jax.vmap(lambda s: env.render(s, image_size))(flat)
  pixels = render_lib.to_uint8(imgs).reshape(*state.shape[:-1], *imgs.shape[1:])
  return dict(batch, pixels=pixels)


def window_index(num_trajectories: int, trajectory_length: int, num_hist: int, frameskip: int,
                 stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Every window start of a fixed grid, in (trajectory, start) order.

  Args:
    num_trajectories, trajectory_length: N and T.
    num_hist, frameskip: window shape.
    stride: env steps between consecutive starts (default: frameskip).

  Returns:
    (traj (M,), start (M,)) int32 numpy arrays.
  """
  stride = frameskip if stride is None else stride
  if stride < 1:
    raise ValueError(f'stride must be >= 1, got {stride}.')
  last = trajectory_length - num_hist * frameskip
  if last < 0:
    raise ValueError(f'Trajectories of {trajectory_length} steps are shorter than one window '
                     f'of num_hist * frameskip = {num_hist * frameskip} steps.')
  starts = np.arange(0, last + 1, stride, dtype=np.int32)
  traj = np.repeat(np.arange(num_trajectories, dtype=np.int32), len(starts))
  return traj, np.tile(starts, num_trajectories)


@functools.partial(jax.jit, static_argnames=('num_hist', 'frameskip', 'env', 'image_size'))
def _gather_jit(arrays, traj, start, num_hist, frameskip, env=None, image_size=None):
  batch = gather_windows(arrays, traj, start, num_hist, frameskip)
  if env is not None:
    batch = add_pixels(env, batch, image_size)
  return batch


def iterate_windows(arrays: WindowArrays, batch_size: int, num_hist: int, frameskip: int,
                    stride: int | None = None, max_windows: int | None = None,
                    env: base.Env | None = None,
                    image_size: int | None = None) -> Iterator[Batch]:
  """Deterministic pass over a fixed window grid (for validation losses).

  Windows come in `window_index` order; with `max_windows` an evenly spaced subset of
  that many is taken. Every batch has `batch_size` windows except possibly the last.
  With `env` and `image_size` the batches include 'pixels'.

  Yields:
    Batches as in `gather_windows` (+ 'pixels').
  """
  if (env is None) != (image_size is None):
    raise ValueError('Give both env and image_size to render pixels, or neither.')
  n, t = arrays.actions.shape[:2]
  traj, start = window_index(n, t, num_hist, frameskip, stride)
  if max_windows is not None and max_windows < len(traj):
    pick = np.linspace(0, len(traj) - 1, max_windows).round().astype(np.int64)
    traj, start = traj[pick], start[pick]
  for i in range(0, len(traj), batch_size):
    yield _gather_jit(arrays, jnp.asarray(traj[i:i + batch_size]),
                      jnp.asarray(start[i:i + batch_size]), num_hist, frameskip, env,
                      image_size)
