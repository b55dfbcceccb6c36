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

Integrity: `save` refuses a state holding NaN or infinities (nothing is written) and stores in
`meta['integrity']` the sha256, shape and dtype of every leaf of the state item, and in
`meta['meta_sha256']` the sha256 of the meta item itself. Every read verifies them: a step whose
meta or state cannot be read, or whose arrays differ from what was saved (a flipped bit, a
truncated file) raises `CorruptCheckpointError` naming the step's file. `restore(...,
fallback=True)` (resuming training) instead warns (`CorruptCheckpointWarning`), moves the step to
`<directory>/corrupt/` and tries the next older step. Checkpoints written before checksums existed
are read without them (their arrays are still checked to be finite).
"""

import hashlib
import json
import os
import warnings
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from wmjax import checks
from wmjax import io
from wmjax.training.integrity import check_structure
from wmjax.training.integrity import CorruptCheckpointError
from wmjax.training.integrity import CorruptCheckpointWarning
from wmjax.training.integrity import INTEGRITY_KEY
from wmjax.training.integrity import META_SHA_KEY
from wmjax.training.integrity import meta_digest
from wmjax.training.integrity import raise_if_differ
from wmjax.training.integrity import state_integrity
from wmjax.training.integrity import structure_diff
from wmjax.training.integrity import verify_state
from wmjax.training.train_state import TrainState

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'
CORRUPT_DIR = 'corrupt'  # Steps that failed their checks, kept for inspection.
STALE_DIR = 'stale'      # Saves of an earlier run set aside by a fresh one.
WHICH = ('latest', 'best')
# Meta entries compared on restore.
COMPARED_META = ('task', 'model_config', 'dataset_fingerprint')
# Config entries that determine what training computes (beside the model config, compared by
# COMPARED_META): a resumed run must have the same ones, or say it accepts the change.
TRAINING_SETTINGS = ('seed', 'frameskip', 'num_hist', 'image_size', 'data', 'train')
# Settings added after checkpoints were written, whose default is not off: the value that runs
# written without the field behaved as (a checkpoint lacking it matches this value too).
ADDED_SETTINGS = {'finetune.online.planner': 'adam'}


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


_MISSING = '<missing>'


def _dict_diff(a: Any, b: Any, prefix: str = '', missing_is_off: bool = False) -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _dict_diff(a.get(k, _MISSING), b.get(k, _MISSING),
                        f'{prefix}.{k}' if prefix else k, missing_is_off)
    return out
  off = b is None or b is False or b == '' or (isinstance(b, (int, float)) and b == 0)
  if missing_is_off and a == _MISSING and (off or ADDED_SETTINGS.get(prefix, _MISSING) == b):
    return []  # A setting added since the checkpoint was written, left off (or as it behaved).
  return [] if a == b else [f'{prefix}: checkpoint has {a!r}, expected {b!r}']


def check_meta(stored: Mapping[str, Any], expected: Mapping[str, Any],
               keys: tuple[str, ...] = COMPARED_META, where: str = '') -> None:
  """Raises ValueError naming every difference between stored and expected meta on `keys`."""
  diffs = []
  for k in keys:
    if k in expected:
      diffs += _dict_diff(_jsonable(stored.get(k, _MISSING)), _jsonable(expected[k]), k)
  if diffs:
    raise io.MismatchError(
        f'Checkpoint {where} was written by another task/config/dataset; differences:\n  '
        + '\n  '.join(diffs))


def check_shapes(stored: Mapping[str, list[int]], expected: Mapping[str, list[int]],
                 where: str = '') -> None:
  """Raises ValueError naming parameters missing, extra or of another shape."""
  spec = lambda shapes: {k: f'shape {list(v)}' for k, v in shapes.items()}
  raise_if_differ(structure_diff(spec(stored), spec(expected), 'model', 'the model'),
                  f'Checkpoint {where} has other parameter shapes than the model')


def _get_path(d: Any, dotted: str) -> Any:
  for part in dotted.split('.'):
    if not isinstance(d, Mapping) or part not in d:
      return _MISSING
    d = d[part]
  return d


def settings_diff(stored_config: Mapping[str, Any], config: Any,
                  keys: Sequence[str] = TRAINING_SETTINGS) -> list[str]:
  """'<field>: checkpoint has X, this run Y' for every config field under `keys` (dotted paths
  allowed, e.g. 'plan.alpha') that differs between a checkpoint's stored config and `config`.
  A field the checkpoint lacks (added since it was written) matches this run's when that is off
  ('', None, False or 0) or the value runs without it behaved as (`ADDED_SETTINGS`)."""
  current = config_to_dict(config)
  diffs = []
  for key in keys:
    a, b = _jsonable(_get_path(stored_config, key)), _jsonable(_get_path(current, key))
    diffs += [d.replace(', expected ', ', this run ')
              for d in _dict_diff(a, b, key, missing_is_off=True)]
  return diffs


def check_settings(stored_meta: Mapping[str, Any], config: Any, *,
                   keys: Sequence[str] = TRAINING_SETTINGS, accept: bool = False,
                   where: str = '', flag: str = '--accept_changed_settings') -> list[str]:
  """Compares a checkpoint's training settings with this run's.

  Returns:
    The differences (empty when none); with `accept` they are returned, not raised.

  Raises:
    ValueError: the settings differ and `accept` is False; the message names every difference
      and the choices.
  """
  diffs = settings_diff(stored_meta.get('config') or {}, config, keys)
  if diffs and not accept:
    raise io.MismatchError(
        f'Checkpoint {where} was written by a run with other training settings:\n  '
        + '\n  '.join(diffs) + '\nResuming would mix two runs in one workdir. Run with the '
        f'checkpoint\'s settings, use another --workdir, or pass {flag} to continue this run '
        'with the new settings.')
  return diffs


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
    if not self._managers:
      raise ValueError(f'The checkpointer of {self.directory} is closed.')
    return self._managers[which]

  def steps(self, which: str = 'latest') -> list[int]:
    """Completed (finalised) steps, ascending."""
    return sorted(self._manager(which).all_steps())

  def latest_step(self, which: str = 'latest') -> int | None:
    steps = self.steps(which)
    return steps[-1] if steps else None

  def step_path(self, which: str, step: int, item: str | None = None) -> str:
    """The directory of a saved step (or of one of its items, 'state' or 'meta')."""
    path = os.path.join(self._manager(which).directory, str(step))
    return path if item is None else os.path.join(path, item)

  def read_meta(self, which: str = 'latest', step: int | None = None) -> dict[str, Any] | None:
    """Meta of a saved step (default: the newest of `which`), or None if there is none.

    Raises:
      CorruptCheckpointError: the meta item is missing, unreadable or fails its checksum.
    """
    mngr = self._manager(which)
    step = self.latest_step(which) if step is None else step
    if step is None:
      return None
    where = self.step_path(which, step, 'meta')
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      meta = dict(restored.meta)
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises KeyError, FileNotFoundError, ValueError, JSON errors... for damaged items.
      raise CorruptCheckpointError(
          f'{where} cannot be read ({type(e).__name__}: {e}); the step is damaged or '
          'incomplete.') from e
    if META_SHA_KEY in meta and meta_digest(meta) != meta[META_SHA_KEY]:
      raise CorruptCheckpointError(f'{where} is corrupt: its content differs from what was saved '
                                   '(sha256 mismatch; a damaged or edited file).')
    return meta

  def best_val_loss(self) -> float | None:
    """Validation loss of the best save, or None."""
    meta = self.read_meta('best')
    return None if meta is None else meta.get('val_loss')

  def save(self, state: TrainState, meta: Mapping[str, Any], *, which: str = 'latest',
           val_loss: float | None = None) -> bool:
    """Saves `state` at its step with `meta` (+ step, val_loss, shapes, checksums).

    Returns:
      False if that step already exists (nothing written), else True.

    Raises:
      checks.NonFiniteError: the state (or `val_loss`) holds NaN or infinities; nothing written.
    """
    mngr = self._manager(which)
    step = int(jax.device_get(state.step))
    if step in mngr.all_steps():
      return False
    host_state = jax.device_get(state)  # Safe against donation of the device buffers.
    bad = checks.nonfinite_leaves(host_state, limit=5)
    if val_loss is not None and not np.isfinite(val_loss):
      bad.append(f'val_loss: {val_loss}')
    if bad:
      raise checks.NonFiniteError(f'Refusing to save a non-finite state at step {step} '
                                  f'({which}): ' + '; '.join(bad))
    full_meta = _jsonable({**meta, 'step': step, 'val_loss': val_loss,
                           'shapes': param_shapes(host_state),
                           INTEGRITY_KEY: {'state': state_integrity(host_state)}})
    full_meta[META_SHA_KEY] = meta_digest(full_meta)
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                            meta=ocp.args.JsonSave(full_meta)))
    return True

  def save_if_best(self, state: TrainState, meta: Mapping[str, Any], val_loss: float) -> bool:
    """Saves to `best/` if `val_loss` is finite and beats the best saved so far; returns whether
    it did."""
    if not np.isfinite(val_loss):
      return False
    self.wait('best')
    best = self.best_val_loss()
    if best is not None and not val_loss < best:
      return False
    return self.save(state, meta, which='best', val_loss=float(val_loss))

  def set_aside(self, which: str, step: int, reason: str, into: str = CORRUPT_DIR) -> str:
    """Moves a saved step out of the manager's directory into `<directory>/<into>/` (nothing is
    deleted); returns where it went. Only process 0 moves files in a multi-process job."""
    self.wait(which)
    src = self.step_path(which, step)
    sub = LATEST_DIR if which == 'latest' else BEST_DIR
    dst = os.path.join(self.directory, into, f'{sub}-{step}')
    n = 1
    while os.path.exists(dst):
      n += 1
      dst = os.path.join(self.directory, into, f'{sub}-{step}-{n}')
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      os.rename(src, dst)
      with open(os.path.join(dst, 'REASON.txt'), 'w') as f:
        f.write(reason + '\n')
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'wmjax_set_aside_{which}_{step}')
    self._manager(which).reload()
    return dst

  def _restore_checked(self, which: str, step: int, abstract: Any, meta: Mapping[str, Any]):
    where = self.step_path(which, step, 'state')
    try:
      restored = self._manager(which).restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
      state = restored.state
    except Exception as e:  # pylint: disable=broad-except
      if INTEGRITY_KEY not in meta and isinstance(e, (ValueError, KeyError, TypeError)):
        # Without recorded structure, a mismatch cannot be told apart from damage.
        raise io.MismatchError(f'Checkpoint {where} does not match the training state (optimiser '
                               f'or extra state differ, or the file is damaged): {e}') from e
      raise CorruptCheckpointError(f'{where} cannot be read ({type(e).__name__}: {e}); the '
                                   'file is damaged or truncated.') from e
    verify_state(state, meta, where)
    return state

  def restore(self, target: TrainState, *, which: str = 'latest', step: int | None = None,
              expected_meta: Mapping[str, Any] | None = None, fallback: bool = False
              ) -> tuple[TrainState, dict[str, Any]]:
    """Restores a saved state into the structure of `target` (concrete or abstract arrays).

    Args:
      target: a TrainState with the expected structure, shapes and dtypes.
      which: 'latest' or 'best'.
      step: a saved step; default the newest of `which`.
      expected_meta: meta of the current run; entries in COMPARED_META must match.
      fallback: (with `step` None) if the newest step is corrupt, warn, move it to
        `<directory>/corrupt/` and try the next older one, and so on.

    Raises:
      ValueError: no checkpoint, or the checkpoint's task/config/dataset/shapes differ (never
        skipped by `fallback`: another run's checkpoint is not damage).
      CorruptCheckpointError: the step (with `fallback`: every step) is damaged; the message
        names the file.
    """
    mngr = self._manager(which)
    candidates = [step] if step is not None else sorted(self.steps(which), reverse=True)
    if not candidates or candidates[0] not in mngr.all_steps():
      raise ValueError(f'No {which} checkpoint (step {step}) in {mngr.directory}; '
                       f'saved steps: {self.steps(which)}.')
    if not fallback:
      candidates = candidates[:1]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    problems = []
    for s in candidates:
      where = self.step_path(which, s)
      try:
        meta = self.read_meta(which, s)
        if expected_meta is not None:
          check_meta(meta, expected_meta, where=where)
        check_shapes(meta.get('shapes', {}), param_shapes(target), where=where)
        if INTEGRITY_KEY in meta:
          check_structure(meta[INTEGRITY_KEY]['state'], target, where=where)
        state = self._restore_checked(which, s, abstract, meta)
        return state, meta
      except CorruptCheckpointError as e:
        if not fallback:
          raise
        problems.append(str(e))
        older = [c for c in candidates if c < s]
        moved = self.set_aside(which, s, str(e))
        warnings.warn(f'{e} Skipping step {s} (moved to {moved}); '
                      + (f'falling back to step {older[0]}.' if older else
                         'no older step is left.'), CorruptCheckpointWarning, stacklevel=2)
    raise CorruptCheckpointError(
        f'No intact {which} checkpoint in {mngr.directory}:\n  ' + '\n  '.join(problems)
        + f'\nThe damaged steps were moved to {os.path.join(self.directory, CORRUPT_DIR)}. '
        'Move the directory away to start over.')

  def restore_raw(self, which: str = 'latest', step: int | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restores a saved state as nested dicts of arrays (no target needed) and its meta, both
    verified.

    Raises:
      ValueError: no checkpoint.
      CorruptCheckpointError: the step is damaged; the message names the file.
    """
    mngr = self._manager(which)
    step = self.latest_step(which) if step is None else step
    if step is None or step not in mngr.all_steps():
      raise ValueError(f'No {which} checkpoint (step {step}) in {mngr.directory}; '
                       f'saved steps: {self.steps(which)}.')
    meta = self.read_meta(which, step)
    where = self.step_path(which, step, 'state')
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
      state = restored.state
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f'{where} cannot be read ({type(e).__name__}: {e}); the '
                                   'file is damaged or truncated.') from e
    verify_state(state, meta, where)
    return state, meta

  def wait(self, which: str | None = None) -> None:
    """Blocks until pending saves are written."""
    for name, mngr in self._managers.items():
      if which in (None, name):
        mngr.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the managers; later calls do nothing."""
    managers, self._managers = self._managers, {}
    for mngr in managers.values():
      mngr.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    """Closes: a run stopped by an exception still finishes the saves it started."""
    self.close()


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


def load_world_model(path: str, *, which: str = 'best', step: int | None = None
                     ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """Rebuilds a trained world model from its checkpoint directory.

  Args:
    path: a workdir, its `world_model/` directory, or any directory holding `checkpoints/`/`best/`.
    which: 'best' (lowest validation loss; falls back to 'latest' if there is no best save, as
      when training had no validation split) or 'latest'.
    step: a saved step of `which`; default the newest.

  Returns:
    (model, params, meta): the `WorldModel` rebuilt from the stored `model_kwargs`, its full
    parameter dict ({'encoder', 'proprio_encoder', 'action_encoder', 'predictor'}) and the
    checkpoint meta ('config', 'model_kwargs', 'step', 'val_loss', 'dataset_fingerprint', ...,
    'which': the kind actually loaded, 'which_note': why it differs from the one asked for).

  Raises:
    CorruptCheckpointError: the checkpoint is damaged (never replaced silently by another one);
      the message names the file.
  """
  if which not in WHICH:
    raise ValueError(f'Unknown checkpoint kind {which!r}; choose one of {WHICH}.')
  ckpt = Checkpointer(resolve_checkpoint_dir(path), async_save=False)
  note = None
  try:
    if which == 'best' and step is None and ckpt.latest_step('best') is None:
      note = (f'no best checkpoint in {ckpt.directory} (training saved none: no validation '
              'split?); using the latest one')
      which = 'latest'
    try:
      state, meta = ckpt.restore_raw(which, step)
    except CorruptCheckpointError as e:
      other = [w for w in WHICH if w != which and ckpt.latest_step(w) is not None]
      raise CorruptCheckpointError(
          f'{e} Refusing to plan with it. Choose another checkpoint'
          + (f' (e.g. {other[0]}: --config.plan.checkpoint={other[0]})' if other else '')
          + ' or retrain.') from e
  finally:
    ckpt.close()
  model = build_world_model(meta['model_kwargs'])
  params = {**state['params'], **state['frozen']}
  return model, params, dict(meta, which=which, which_note=note)
