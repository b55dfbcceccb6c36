"""Starting, resuming and stopping a training run safely (host side, between jitted steps).

- `start_or_resume`: a run directory with checkpoints resumes from the newest intact one (damaged
  steps are skipped with a warning and moved to `corrupt/`), after checking that it was written by
  the same task, model, dataset AND training settings (a difference is an error naming every
  field, unless the caller accepts it); a `best/` save that is damaged or belongs to another run is
  moved aside, never kept silently. A directory without checkpoints starts fresh, and a `best/`
  left there by an earlier run is moved to `stale/`.
- `raise_if_nonfinite`: stops a run at its first non-finite loss or gradient (the guarded train
  step left the state unchanged, so nothing non-finite is saved).
"""

import uuid
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from wmjax import checks
from wmjax.training import checkpoint as checkpoint_lib
from wmjax.training.integrity import CorruptCheckpointError
from wmjax.training.integrity import CorruptCheckpointWarning


class Start(NamedTuple):
  """How a run starts.

  Attributes:
    state: the restored TrainState, or None to start fresh.
    meta: the restored step's meta (None when fresh).
    step: the restored step (None when fresh).
    changed_settings: training settings that differ from the checkpoint's (accepted by the
      caller); empty otherwise.
    run_id: identifies the run across its resumptions (new when fresh, else the checkpoint's);
      store it in the meta of every save (`meta['run_id']`).
  """

  state: Any
  meta: dict[str, Any] | None
  step: int | None
  changed_settings: list[str]
  run_id: str


def _check_best(ckpt: checkpoint_lib.Checkpointer, expected_meta: Mapping[str, Any],
                config: Any, settings: Sequence[str], accept: bool,
                run_id: str | None) -> None:
  """Moves a damaged best save to corrupt/, one of another run to stale/ (another run: another
  run_id; for saves without one, other meta or training settings)."""
  for step in ckpt.steps('best'):
    where = ckpt.step_path('best', step)
    try:
      _, meta = ckpt.restore_raw('best', step)
    except CorruptCheckpointError as e:
      moved = ckpt.set_aside('best', step, str(e))
      warnings.warn(f'{e} The best save is set aside (moved to {moved}); the next validation '
                    'writes a new one.', CorruptCheckpointWarning, stacklevel=3)
      continue
    try:
      if run_id is not None and meta.get('run_id') is not None:
        if meta['run_id'] != run_id:
          raise ValueError(f'run {meta["run_id"]}, while the latest checkpoints are of run '
                           f'{run_id}')
      else:
        checkpoint_lib.check_meta(meta, expected_meta, where=where)
        checkpoint_lib.check_settings(meta, config, keys=settings, accept=accept, where=where)
    except ValueError as e:
      moved = ckpt.set_aside('best', step, str(e), into=checkpoint_lib.STALE_DIR)
      warnings.warn(f'{where} was written by another run ({e}); moved to {moved}.',
                    stacklevel=3)


def start_or_resume(ckpt: checkpoint_lib.Checkpointer, target_fn: Callable[..., Any],
                    expected_meta: Mapping[str, Any], config: Any, *,
                    target_args: tuple[Any, ...] = (),
                    settings: Sequence[str] = checkpoint_lib.TRAINING_SETTINGS,
                    accept_changed_settings: bool = False) -> Start:
  """Restores the newest intact checkpoint of `ckpt`, or prepares a fresh start.

  Args:
    ckpt: the run's Checkpointer.
    target_fn: (*target_args) -> a TrainState of the run's structure (only traced, by
      `jax.eval_shape`).
    expected_meta: this run's meta (task, model config and dataset fingerprint must match).
    config: this run's config; its `settings` entries are compared with the checkpoint's.
    target_args: arguments of `target_fn` (arrays or jax.ShapeDtypeStructs).
    settings: config entries (dotted paths allowed) that define the training run.
    accept_changed_settings: continue with this run's settings when they differ (each
      difference is still reported in `Start.changed_settings`).

  Returns:
    A `Start`.

  Raises:
    ValueError: the checkpoint belongs to another task, model, dataset or (unless accepted)
      other training settings; the message names every difference.
    CorruptCheckpointError: no intact checkpoint is left.
  """
  if ckpt.latest_step() is None:
    for step in ckpt.steps('best'):
      moved = ckpt.set_aside('best', step, 'a best save without latest checkpoints: left by an '
                             'earlier run in this directory', into=checkpoint_lib.STALE_DIR)
      warnings.warn(f'{ckpt.step_path("best", step)} was left by an earlier run (there are no '
                    f'latest checkpoints to resume); moved to {moved} so that this fresh run '
                    'writes its own best.', stacklevel=2)
    return Start(None, None, None, [], uuid.uuid4().hex[:16])
  target = jax.eval_shape(target_fn, *target_args)
  state, meta = ckpt.restore(target, expected_meta=expected_meta, fallback=True)
  changed = checkpoint_lib.check_settings(meta, config, keys=settings,
                                          accept=accept_changed_settings,
                                          where=ckpt.step_path('latest', meta['step']))
  run_id = meta.get('run_id')
  _check_best(ckpt, expected_meta, config, settings, accept_changed_settings, run_id)
  return Start(state, meta, int(meta['step']), changed, run_id or uuid.uuid4().hex[:16])


def raise_if_nonfinite(step: int, metrics: Mapping[str, Any], *, last_saved: int | None,
                       directory: str, hint: str = '') -> None:
  """Raises NonFiniteError if the (guarded) train step `step` reported a non-finite loss or
  gradient.

  Args:
    step: the step the metrics belong to (1-based: the step that produced them).
    metrics: that step's metrics (device or host values), with 'nonfinite', 'loss', 'grad_norm'.
    last_saved: the newest checkpoint step on disk (None if none).
    directory: the checkpoint directory (for the message).
    hint: what to change (e.g. the learning-rate fields of the config).
  """
  if 'nonfinite' not in metrics:
    return
  host = jax.device_get({k: metrics[k] for k in ('nonfinite', 'loss', 'grad_norm')
                         if k in metrics})
  if not int(host['nonfinite']):
    return
  values = ', '.join(f'{k}={float(np.asarray(host[k])):.4g}' for k in ('loss', 'grad_norm')
                     if k in host)
  saved = (f'the newest checkpoint is step {last_saved} in {directory}' if last_saved is not None
           else f'no checkpoint was saved in {directory}')
  raise checks.NonFiniteError(
      f'Training stopped at step {step}: non-finite loss or gradient ({values}). The step was not '
      f'applied and nothing non-finite was saved; {saved}. {hint}'.rstrip())


def check_pending(pending: tuple[int, Mapping[str, Any]] | None, ckpt, writer,
                  hint: str = '') -> None:
  """`raise_if_nonfinite` for a queued (step, metrics) pair (None: nothing queued yet). Before
  raising, closes `writer` and the checkpointer `ckpt` (which finishes the finite saves already
  started), so the training loops stop with nothing half written."""
  if pending is None:
    return
  try:
    raise_if_nonfinite(*pending, last_saved=ckpt.latest_step(), directory=ckpt.directory,
                       hint=hint)
  except checks.NonFiniteError:
    writer.close()
    ckpt.close()
    raise
