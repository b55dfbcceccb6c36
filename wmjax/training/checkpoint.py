"""Checkpoints of the world-model `TrainState`: the last k, the best by validation loss, and meta.

Layout of a checkpoint directory (normally `<workdir>/world_model`):
  checkpoints/<step>/{state, meta}   the last `keep` saves (one orbax CheckpointManager)
  best/<step>/{state, meta}          the save with the lowest validation loss (a second manager,
                                     max_to_keep=1, written only when the loss improves)
Two managers because one orbax manager either keeps the last k or the k best, not both.

Atomicity: orbax writes each step to `<step>.orbax-checkpoint-tmp` and renames it once complete; a
directory left by a killed save is never listed as a step (so never restored) and is removed when a
manager next opens the directory. States are copied to host memory before an asynchronous save, so
the caller may donate the device buffers right after `save` returns.

`meta` is JSON: task, full config, the model-relevant config and its fingerprint, dataset
fingerprint, step, validation losses and the shape of every parameter. `restore` compares the stored
meta with the expected one first, then the parameter shapes, and raises a ValueError naming what
differs before orbax reads any array.
"""

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from wmjax.training.train_state import TrainState

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'
WHICH = ('latest', 'best')
# Meta entries compared on restore.
COMPARED_META = ('task', 'model_config', 'dataset_fingerprint')


def _jsonable(x: Any) -> Any:
  """A JSON round trip of `x` (tuples become lists, numpy scalars numbers)."""

  def default(o):
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, np.ndarray):
      return o.tolist()
    return str(o)

  return json.loads(json.dumps(x, default=default, sort_keys=True))


def config_to_dict(config: Any) -> dict[str, Any]:
  """A ConfigDict (or dict) as a JSON-able dict."""
  return _jsonable(config.to_dict() if hasattr(config, 'to_dict') else dict(config))


def world_model_kwargs(config: Any, env: Any) -> dict[str, Any]:
  """Everything `wmjax.models.make_world_model` needs: the config's `model` section plus the sizes
  derived from the task and the run config (image_size, state/proprio sizes, model action size
  frameskip * A, num_hist)."""
  kwargs = config_to_dict(config.model)
  kwargs.update(image_size=int(config.image_size), state_dim=int(env.state_size),
                proprio_dim=int(env.proprio_size),
                action_dim=int(config.frameskip) * int(env.action_size),
                num_hist=int(config.num_hist))
  return _jsonable(kwargs)


def build_world_model(model_kwargs: Mapping[str, Any]) -> Any:
  """`make_world_model` from stored `world_model_kwargs` (JSON lists turned back into tuples)."""
  from wmjax.models import make_world_model  # pylint: disable=g-import-not-at-top
  return make_world_model(_tuples(dict(model_kwargs)))


def fingerprint(x: Any) -> str:
  """Short stable hash of a JSON-able value."""
  return hashlib.sha256(json.dumps(_jsonable(x), sort_keys=True).encode()).hexdigest()[:16]


def param_shapes(state: TrainState) -> dict[str, list[int]]:
  """{'params/<path>' or 'frozen/<path>': shape} of every parameter leaf."""
  out = {}
  for name, tree in (('params', state.params), ('frozen', state.frozen)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      shape = leaf.shape if hasattr(leaf, 'shape') else np.shape(leaf)
      key = name + '/' + jax.tree_util.keystr(path, simple=True, separator='/')
      out[key] = list(map(int, shape))
  return out


def make_meta(config: Any, *, model_kwargs: Mapping[str, Any],
              dataset_fingerprint: str | None = None, **extra: Any) -> dict[str, Any]:
  """Meta stored with every checkpoint of a run (step, losses and shapes are added by `save`).

  Args:
    config: the run config (stored whole, for reference).
    model_kwargs: `world_model_kwargs(config, env)`, enough to rebuild the model.
    dataset_fingerprint: identifies the training data (e.g. its arrays' sha256).
    **extra: further JSON-able entries.
  """
  model_config = {'task': config.task, 'frameskip': int(config.frameskip),
                  'model_kwargs': _jsonable(dict(model_kwargs))}
  return _jsonable({
      'task': config.task,
      'config': config_to_dict(config),
      'model_kwargs': dict(model_kwargs),
      'model_config': model_config,
      'config_fingerprint': fingerprint(model_config),
      'dataset_fingerprint': dataset_fingerprint,
      **extra,
  })


def _dict_diff(a: Any, b: Any, prefix: str = '') -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _dict_diff(a.get(k, '<missing>'), b.get(k, '<missing>'),
                        f'{prefix}.{k}' if prefix else k)
    return out
  return [] if a == b else [f'{prefix}: checkpoint has {a!r}, expected {b!r}']


def check_meta(stored: Mapping[str, Any], expected: Mapping[str, Any],
               keys: tuple[str, ...] = COMPARED_META, where: str = '') -> None:
  """Raises ValueError naming every difference between stored and expected meta on `keys`."""
  diffs = []
  for k in keys:
    if k in expected:
      diffs += _dict_diff(_jsonable(stored.get(k, '<missing>')), _jsonable(expected[k]), k)
  if diffs:
    raise ValueError(
        f'Checkpoint {where} was written by another task/config/dataset; differences:\n  '
        + '\n  '.join(diffs))


def check_shapes(stored: Mapping[str, list[int]], expected: Mapping[str, list[int]],
                 where: str = '') -> None:
  """Raises ValueError naming parameters missing, extra or of another shape."""
  diffs = []
  for k in sorted(set(stored) | set(expected)):
    if k not in stored:
      diffs.append(f'{k}: missing from checkpoint (expected shape {expected[k]})')
    elif k not in expected:
      diffs.append(f'{k}: in checkpoint (shape {stored[k]}) but not in the model')
    elif list(stored[k]) != list(expected[k]):
      diffs.append(f'{k}: checkpoint shape {stored[k]}, model shape {expected[k]}')
  if diffs:
    shown = diffs[:20] + ([f'... and {len(diffs) - 20} more'] if len(diffs) > 20 else [])
    raise ValueError(f'Checkpoint {where} has other parameter shapes than the model:\n  '
                     + '\n  '.join(shown))


class Checkpointer:
  """Saves and restores `TrainState`s: last `keep` saves plus the best by validation loss.

  Host-side object (file I/O only; holds no JAX arrays).

  Args:
    directory: checkpoint root (created).
    keep: how many of the latest saves to keep.
    async_save: write in a background thread (`wait` blocks until written).
  """

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    if keep < 1:
      raise ValueError(f'keep must be >= 1, got {keep}.')
    self.directory = os.path.abspath(directory)

    def manager(sub, max_to_keep):
      # Each manager syncs processes under its own barrier names: 'latest' and 'best' may save
      # the same step at once in a multi-process job.
      options = ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
          enable_async_checkpointing=async_save,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=sub))
      return ocp.CheckpointManager(os.path.join(self.directory, sub), options=options)

    self._managers = {'latest': manager(LATEST_DIR, keep), 'best': manager(BEST_DIR, 1)}

  def _manager(self, which: str) -> ocp.CheckpointManager:
    if which not in WHICH:
      raise ValueError(f'Unknown checkpoint kind {which!r}; choose one of {WHICH}.')
    return self._managers[which]

  def steps(self, which: str = 'latest') -> list[int]:
    """Completed (finalised) steps, ascending."""
    return sorted(self._manager(which).all_steps())

  def latest_step(self, which: str = 'latest') -> int | None:
    steps = self.steps(which)
    return steps[-1] if steps else None

  def read_meta(self, which: str = 'latest', step: int | None = None) -> dict[str, Any] | None:
    """Meta of a saved step (default: the newest of `which`), or None if there is none."""
    mngr = self._manager(which)
    step = self.latest_step(which) if step is None else step
    if step is None:
      return None
    restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def best_val_loss(self) -> float | None:
    """Validation loss of the best save, or None."""
    meta = self.read_meta('best')
    return None if meta is None else meta.get('val_loss')

  def save(self, state: TrainState, meta: Mapping[str, Any], *, which: str = 'latest',
           val_loss: float | None = None) -> bool:
    """Saves `state` at its step with `meta` (+ step, val_loss, shapes).

    Returns:
      False if that step already exists (nothing written), else True.
    """
    mngr = self._manager(which)
    step = int(jax.device_get(state.step))
    if step in mngr.all_steps():
      return False
    host_state = jax.device_get(state)  # Safe against donation of the device buffers.
    full_meta = _jsonable({**meta, 'step': step, 'val_loss': val_loss,
                           'shapes': param_shapes(host_state)})
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                            meta=ocp.args.JsonSave(full_meta)))
    return True

  def save_if_best(self, state: TrainState, meta: Mapping[str, Any], val_loss: float) -> bool:
    """Saves to `best/` if `val_loss` beats the best saved so far; returns whether it did."""
    self.wait('best')
    best = self.best_val_loss()
    if best is not None and not val_loss < best:
      return False
    return self.save(state, meta, which='best', val_loss=float(val_loss))

  def restore(self, target: TrainState, *, which: str = 'latest', step: int | None = None,
              expected_meta: Mapping[str, Any] | None = None) -> tuple[TrainState, dict[str, Any]]:
    """Restores a saved state into the structure of `target` (concrete or abstract arrays).

    Args:
      target: a TrainState with the expected structure, shapes and dtypes.
      which: 'latest' or 'best'.
      step: a saved step; default the newest of `which`.
      expected_meta: meta of the current run; entries in COMPARED_META must match.

    Raises:
      ValueError: no checkpoint, or the checkpoint's task/config/dataset/shapes differ.
    """
    mngr = self._manager(which)
    step = self.latest_step(which) if step is None else step
    where = os.path.join(mngr.directory, str(step))
    if step is None or step not in mngr.all_steps():
      raise ValueError(f'No {which} checkpoint (step {step}) in {mngr.directory}; '
                       f'saved steps: {self.steps(which)}.')
    meta = self.read_meta(which, step)
    if expected_meta is not None:
      check_meta(meta, expected_meta, where=where)
    check_shapes(meta.get('shapes', {}), param_shapes(target), where=where)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'Checkpoint {where} does not match the training state '
                       f'(optimiser or extra state differ?): {e}') from e
    return restored.state, dict(restored.meta)

  def restore_raw(self, which: str = 'latest', step: int | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores a saved state as nested dicts of arrays (no target needed) and its meta."""
    mngr = self._manager(which)
    step = self.latest_step(which) if step is None else step
    if step is None:
      raise ValueError(f'No {which} checkpoint in {mngr.directory}.')
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def wait(self, which: str | None = None) -> None:
    """Blocks until pending saves are written."""
    for name, mngr in self._managers.items():
      if which in (None, name):
        mngr.wait_until_finished()

  def close(self) -> None:
    for mngr in self._managers.values():
      mngr.close()


def resolve_checkpoint_dir(path: str) -> str:
  """A directory holding `checkpoints/` or `best/`: `path` itself, or `path/world_model`."""
  for cand in (path, os.path.join(path, 'world_model')):
    if any(os.path.isdir(os.path.join(cand, d)) for d in (LATEST_DIR, BEST_DIR)):
      return cand
  raise ValueError(f'No world-model checkpoints under {path!r} (looked for {LATEST_DIR}/ or '
                   f'{BEST_DIR}/ in it and in {os.path.join(path, "world_model")}).')


def _tuples(x: Any) -> Any:
  """Lists back to tuples (JSON loses them; hashable static configs need them)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_world_model(path: str, *, which: str = 'best'
                     ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """Rebuilds a trained world model from its checkpoint directory.

  Args:
    path: a workdir, its `world_model/` directory, or any directory holding `checkpoints/`/`best/`.
    which: 'best' (lowest validation loss; falls back to 'latest' if none) or 'latest'.

  Returns:
    (model, params, meta): the `WorldModel` rebuilt from the stored `model_kwargs`, its full
    parameter dict ({'encoder', 'proprio_encoder', 'action_encoder', 'predictor'}) and the
    checkpoint meta ('config', 'model_kwargs', 'step', 'val_loss', 'dataset_fingerprint', ...).
  """
  ckpt = Checkpointer(resolve_checkpoint_dir(path), async_save=False)
  try:
    if which not in WHICH:
      raise ValueError(f'Unknown checkpoint kind {which!r}; choose one of {WHICH}.')
    if which == 'best' and ckpt.latest_step('best') is None:
      which = 'latest'
    state, meta = ckpt.restore_raw(which)
  finally:
    ckpt.close()
  model = build_world_model(meta['model_kwargs'])
  params = {**state['params'], **state['frozen']}
  return model, params, meta
