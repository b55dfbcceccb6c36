"""Linear probe of a frozen encoder: how much of the state can a linear map read from a frame's
latent (PAPER.md section 10: does the image code carry the state?).

A ridge-regularised least-squares map is fitted from the latents of training frames to each state
feature (`wmjax.data.readout_targets`: angles as cos and sin) and scored by R^2 on held-out
frames. R^2 near 1: the component is linearly decodable; near 0 (or below): it is not. The
visual-only probe reads the flattened visual tokens; the one with proprio appends the proprio
embedding (which carries the agent's position and velocity by construction, so only the visual one
says whether the image code does).

    r2 = probe_encoder(model, params, 'wall', train_arrays, val_arrays, env=env, image_size=64)
    r2['visual']    # {'x': 0.99, 'y': 0.98}

Host-side analysis (NumPy, float64), run between jitted calls; frames are encoded in jitted
batches of one shape.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.data import features as features_lib
from wmjax.data import loader as loader_lib
from wmjax.envs import render as render_lib


def _ridge_fit(train_latents, train_targets, ridge):
  """(x_mean (D,), x_scale (D,), w (D, K), y_mean (K,)) of `fit_linear_probe`, in float64."""
  x = np.asarray(train_latents, np.float64)
  y = np.asarray(train_targets, np.float64)
  if x.ndim != 2 or y.ndim != 2:
    raise ValueError(f'latents must be (N, D) and targets (N, K); got {x.shape}, {y.shape}.')
  if x.shape[0] != y.shape[0]:
    raise ValueError(f'latents and targets disagree on the frame count: {x.shape[0]} vs '
                     f'{y.shape[0]} (train).')
  if not ridge > 0:
    raise ValueError(f'ridge must be > 0; got {ridge}.')
  x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
  x_std = x.std(axis=0)
  x_scale = np.where(x_std > 1e-12 * max(float(np.max(x_std, initial=0.0)), 1e-30),
                     1.0 / np.maximum(x_std, 1e-300), 0.0)
  x, y = (x - x_mean) * x_scale, y - y_mean
  n, d = x.shape
  lam = ridge * max(float(np.sum(x * x)) / max(min(n, d), 1), 1e-30)
  if d <= n:
    w = np.linalg.solve(x.T @ x + lam * np.eye(d), x.T @ y)
  else:  # Dual form: W = X^T (X X^T + lam I)^-1 Y.
    w = x.T @ np.linalg.solve(x @ x.T + lam * np.eye(n), y)
  return x_mean, x_scale, w, y_mean


def fit_linear_probe(train_latents: np.ndarray, train_targets: np.ndarray,
                     ridge: float = 1e-3) -> Callable[[np.ndarray], np.ndarray]:
  """A ridge regression from latents to targets, fitted on training frames: `read(latents)`.

  The fit standardises every latent feature and centres the targets with training statistics
  (constant features are dropped), then minimises |Y - X W|^2 + lam |W|^2 with lam = ridge x (the
  mean non-zero eigenvalue of X^T X, i.e. trace(X^T X) / min(N, D)), so `ridge` depends neither
  on the latents' scale nor on their size. It solves in the smaller of the feature (D x D) and
  sample (N x N, the dual form) spaces.

  Args:
    train_latents: (N, D) features of the training frames.
    train_targets: (N, K) targets of the training frames.
    ridge: relative ridge strength (> 0).

  Returns:
    read: (M, D) latents -> (M, K) predicted targets (float64).
  """
  x_mean, x_scale, w, y_mean = _ridge_fit(train_latents, train_targets, ridge)
  d = len(x_mean)

  def read(latents):
    xt = np.asarray(latents, np.float64)
    if xt.ndim != 2 or xt.shape[1] != d:
      raise ValueError(f'latents must be (M, {d}) like the training latents; got {xt.shape}.')
    return ((xt - x_mean) * x_scale) @ w + y_mean

  return read


def probe_matrix(train_latents: np.ndarray, train_targets: np.ndarray,
                 ridge: float = 1e-3) -> np.ndarray:
  """(D, K) float32 M of the probe `fit_linear_probe` fits on targets scaled to unit std per
  column: read(a) - read(b) = (a - b) @ M, the difference of two latents in each target's
  training standard deviations. Constant target columns get zero columns."""
  y = np.asarray(train_targets, np.float64)
  if y.ndim != 2:
    raise ValueError(f'targets must be (N, K); got {y.shape}.')
  y_std = y.std(axis=0)
  y = y / np.where(y_std > 1e-12, y_std, np.inf)
  _, x_scale, w, _ = _ridge_fit(train_latents, y, ridge)
  return (x_scale[:, None] * w).astype(np.float32)


def r2_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """(K,) R^2 = 1 - SSE / SST per column of (M, K) arrays (SST around the target mean); NaN
  where a target column is constant."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  sse = np.sum((target - pred)**2, axis=0)
  sst = np.sum((target - target.mean(axis=0))**2, axis=0)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(sst > 1e-12 * max(len(target), 1), 1.0 - sse / sst, np.nan)


def linear_probe_r2(train_latents: np.ndarray, train_targets: np.ndarray,
                    test_latents: np.ndarray, test_targets: np.ndarray,
                    ridge: float = 1e-3) -> np.ndarray:
  """R^2 on test frames of a ridge regression fitted on training frames (`fit_linear_probe`),
  per target column.

  Args:
    train_latents: (N, D) features of the training frames.
    train_targets: (N, K) targets of the training frames.
    test_latents: (M, D) features of the held-out frames.
    test_targets: (M, K) targets of the held-out frames.
    ridge: relative ridge strength (> 0).

  Returns:
    (K,) R^2 on the test frames (`r2_score`); NaN where a target is constant on them.
  """
  xt, yt = np.asarray(test_latents), np.asarray(test_targets)
  if xt.ndim != 2 or yt.ndim != 2:
    raise ValueError(f'test latents must be (M, D) and targets (M, K); got {xt.shape}, '
                     f'{yt.shape}.')
  if xt.shape[0] != yt.shape[0]:
    raise ValueError(f'latents and targets disagree on the frame count: {xt.shape[0]} vs '
                     f'{yt.shape[0]} (test).')
  if np.shape(train_latents)[-1] != xt.shape[1] or np.shape(train_targets)[-1] != yt.shape[1]:
    raise ValueError(f'train and test sizes differ: latents {np.shape(train_latents)[-1]} vs '
                     f'{xt.shape[1]}, targets {np.shape(train_targets)[-1]} vs {yt.shape[1]}.')
  return r2_score(fit_linear_probe(train_latents, train_targets, ridge)(xt), yt)


def sample_frames(arrays: loader_lib.WindowArrays, count: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `count` distinct frames of a dataset, drawn uniformly (seeded).

  Returns:
    (states (M, S) raw, proprio (M, P) normalised with the dataset's statistics), M =
    min(count, frames in `arrays`).
  """
  states = np.asarray(arrays.states)
  proprio = np.asarray(arrays.proprio)
  flat_states = states.reshape(-1, states.shape[-1])
  flat_proprio = proprio.reshape(-1, proprio.shape[-1])
  total = len(flat_states)
  pick = np.sort(np.random.default_rng(seed).choice(total, size=min(int(count), total),
                                                    replace=False))
  mean = np.asarray(arrays.stats.proprio_mean)
  std = np.asarray(arrays.stats.proprio_std)
  return flat_states[pick], ((flat_proprio[pick] - mean) / std).astype(np.float32)


def encode_frames(model: Any, params: Mapping[str, Any], states: np.ndarray,
                  proprio: np.ndarray, env: Any = None, image_size: int | None = None,
                  batch_size: int = 256) -> dict[str, np.ndarray]:
  """Latents of single frames, flattened.

  Args:
    model: a `WorldModel`.
    params: its parameters (the encoder's and the proprio encoder's are used).
    states: (M, S) raw simulator states.
    proprio: (M, P) normalised proprio.
    env: the task (renders the frames when the encoder reads pixels).
    image_size: rendered image side (with `env`).
    batch_size: frames per jitted call (the last batch is padded: one compile).

  Returns:
    {'visual': (M, N * Dv), 'proprio': (M, Ep)} float32 NumPy arrays.
  """
  pixels = model.obs_key == 'pixels'
  if pixels and (env is None or image_size is None):
    raise ValueError('This encoder reads pixels: pass env and image_size to render the frames.')

  @jax.jit
  def encode(params, states, proprio):
    obs = {'proprio': proprio}
    if pixels:
      obs['pixels'] = render_lib.to_uint8(jax.vmap(lambda s: env.render(s, image_size))(states))
    else:
      obs['state'] = states
    z = model.encode(params, obs)
    return {'visual': z['visual'].reshape(states.shape[0], -1), 'proprio': z['proprio']}

  states = np.asarray(states, np.float32)
  proprio = np.asarray(proprio, np.float32)
  chunks = []
  for i in range(0, len(states), batch_size):
    s, p = states[i:i + batch_size], proprio[i:i + batch_size]
    pad = batch_size - len(s)
    if pad:
      s = np.concatenate([s, np.repeat(s[-1:], pad, 0)])
      p = np.concatenate([p, np.repeat(p[-1:], pad, 0)])
    out = jax.device_get(encode(params, jnp.asarray(s), jnp.asarray(p)))
    chunks.append({k: np.asarray(v)[:batch_size - pad] for k, v in out.items()})
  return {k: np.concatenate([c[k] for c in chunks]) for k in ('visual', 'proprio')}


def probe_encoder(model: Any, params: Mapping[str, Any], task: str,
                  train: loader_lib.WindowArrays, test: loader_lib.WindowArrays, *,
                  env: Any = None, image_size: int | None = None, train_frames: int = 2000,
                  test_frames: int = 1000, ridge: float = 1e-3, seed: int = 0,
                  return_reader: bool = False) -> Any:
  """Linear-probe R^2 of the model's frozen latent, per state feature of `task`.

  Fits on up to `train_frames` frames of `train` and scores on up to `test_frames` frames of
  `test` (e.g. the held-out trajectories), targets `wmjax.data.readout_targets(task, state)`.

  Returns:
    {'visual': {feature: R^2}, 'visual_proprio': {feature: R^2}, 'visual_rmse': {feature:
    root-mean-square error of the visual probe in the feature's units (px for PushT
    positions)}, 'train_frames': N, 'test_frames': M, 'ridge': ridge}; R^2 is None where a
    feature is constant on the test frames. With `return_reader`, (that dict, the fitted
    visual probe `read`), which `probe_motion` can reuse (the same frames it would fit on
    with the same `seed`).
  """
  names = features_lib.readout_names(task)
  train_states, train_proprio = sample_frames(train, train_frames, seed)
  test_states, test_proprio = sample_frames(test, test_frames, seed + 1)
  n = len(train_states)
  both = encode_frames(model, params, np.concatenate([train_states, test_states]),
                       np.concatenate([train_proprio, test_proprio]), env, image_size)
  latents = {'train': {k: v[:n] for k, v in both.items()},
             'test': {k: v[n:] for k, v in both.items()}}
  targets = {'train': features_lib.readout_targets(task, train_states),
             'test': features_lib.readout_targets(task, test_states)}
  out, readers = {}, {}
  for name, keys in (('visual', ('visual',)), ('visual_proprio', ('visual', 'proprio'))):
    feats = {s: np.concatenate([latents[s][k] for k in keys], axis=-1) for s in latents}
    readers[name] = fit_linear_probe(feats['train'], targets['train'], ridge)
    pred = readers[name](feats['test'])
    r2 = r2_score(pred, targets['test'])
    out[name] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, r2)}
    if name == 'visual':  # What a distance between latents can resolve, in state units.
      rmse = np.sqrt(np.mean(np.square(pred - targets['test']), axis=0))
      out['visual_rmse'] = {n: float(v) for n, v in zip(names, rmse)}
  out.update(train_frames=len(targets['train']), test_frames=len(targets['test']),
             ridge=float(ridge))
  return (out, readers['visual']) if return_reader else out


def probe_motion(model: Any, params: Mapping[str, Any], task: str,
                 train: loader_lib.WindowArrays, test: loader_lib.WindowArrays, *,
                 frameskip: int, horizon: int, env: Any = None, image_size: int | None = None,
                 train_frames: int = 2000, windows: int = 1000, ridge: float = 1e-3,
                 seed: int = 0, batch_size: int = 64,
                 read: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
  """Does the model predict how the state changes? R^2 of the predicted change, per feature.

  A linear probe (state features <- visual latent) is fitted on `train_frames` training frames.
  On up to `windows` held-out windows of `horizon` model steps, each window's first frame is
  encoded and rolled out open loop with its actions ('markov' and 'history'); the probe reads
  the state from the prediction at `horizon` and from the encoded first frame, and their
  difference is scored against the true state change (R^2 per readout feature). 'encoder' scores
  the probe's reading of the encoded true last frame the same way: how much of the change the
  latent itself carries, the level a perfect predictor would reach. `read`: an already fitted
  visual probe (`probe_encoder(..., return_reader=True)`) in place of fitting one here.

  Returns:
    {'horizon', 'windows', 'encoder': {feature: R^2}, 'markov': {...}, 'history': {...}};
    R^2 is None where a feature does not change.
  """
  names = features_lib.readout_names(task)
  pixels = model.obs_key == 'pixels'
  if pixels and (env is None or image_size is None):
    raise ValueError('This encoder reads pixels: pass env and image_size to render the frames.')
  if read is None:
    states, proprio = sample_frames(train, train_frames, seed)
    read = fit_linear_probe(
        encode_frames(model, params, states, proprio, env, image_size)['visual'],
        features_lib.readout_targets(task, states), ridge)

  @jax.jit
  def latents(params, batch):
    z = model.encode(params, {k: batch[k] for k in ('pixels', 'proprio', 'state') if k in batch})
    z0 = jax.tree.map(lambda x: x[:, 0], z)
    flat = lambda v: v.reshape(v.shape[0], -1)
    out = {'first': flat(z['visual'][:, 0]), 'encoder': flat(z['visual'][:, -1])}
    for mode in ('markov', 'history'):
      pred = jax.vmap(lambda z0, a: model.rollout(params, z0, a, mode))(z0, batch['actions'])
      out[mode] = flat(pred['visual'][:, -1])
    return out

  got, true_change = [], []
  render = dict(env=env, image_size=image_size) if pixels else {}
  for batch in loader_lib.iterate_windows(test, batch_size, horizon, frameskip,
                                          max_windows=windows, **render):
    n = batch['actions'].shape[0]  # The last batch is padded: one compile.
    padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], batch_size - n, 0)]),
                          batch)
    got.append(jax.tree.map(lambda x: np.asarray(x)[:n],
                            jax.device_get(latents(params, padded))))
    s = features_lib.readout_targets(task, np.asarray(batch['state']))
    true_change.append(s[:, -1] - s[:, 0])
  true_change = np.concatenate(true_change)
  first = read(np.concatenate([g['first'] for g in got]))
  out = {'horizon': int(horizon), 'windows': len(true_change)}
  for key in ('encoder', 'markov', 'history'):
    change = read(np.concatenate([g[key] for g in got])) - first
    r2 = r2_score(change, true_change)
    out[key] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, r2)}
  return out


def format_probe(probe: Mapping[str, Any]) -> str:
  """A short text table: one row per latent (visual, visual + proprio), one column per feature;
  with 'visual_rmse', a row of the visual probe's error in each feature's units."""
  rows = {'visual': probe['visual'], 'visual+proprio': probe['visual_proprio']}
  if probe.get('visual_rmse') is not None:
    rows['visual RMSE'] = probe['visual_rmse']
  return _table(
      f'Linear probe R^2 of the frozen latent per state feature (ridge {probe["ridge"]:g}; fit on '
      f'{probe["train_frames"]} training frames, scored on {probe["test_frames"]} held-out '
      'frames; RMSE in the feature\'s units):', rows)


def format_motion(motion: Mapping[str, Any]) -> str:
  """A short text table of `probe_motion`: one row per latent, one column per feature."""
  return _table(
      f'R^2 of the state change over {motion["horizon"]} model steps read by the probe, '
      f'{motion["windows"]} held-out windows (encoder: from the encoded true frame; markov / '
      'history: from the open-loop prediction):',
      {key: motion[key] for key in ('encoder', 'markov', 'history')})


def _table(title: str, rows: Mapping[str, Mapping[str, float | None]]) -> str:
  names = list(next(iter(rows.values())))
  width = max(9, *(len(n) for n in names))
  fmt = lambda v: f'{"-":>{width}}' if v is None else f'{v:>{width}.3f}'
  lines = [title, f'{"latent":<15} ' + ' '.join(f'{n:>{width}}' for n in names)]
  for label, values in rows.items():
    lines.append(f'{label:<15} ' + ' '.join(fmt(values[n]) for n in names))
  return '\n'.join(lines)
