"""The step loop the training and finetuning stages share: steps, logs, validation, saves.

Host work (logging, validation, checkpoints) happens between jitted steps: a step is queued
before the previous one's metrics are checked for non-finite values, so the device stays busy,
and nothing is logged, validated or saved after a non-finite step (`training.check_pending`).
"""

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import tqdm

from wmjax import checks
from wmjax import training
from wmjax.training.iterations import Iteration


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When the loop does what, in steps.

  Attributes:
    steps: the step the run ends at.
    log_every: train metrics are written every this many steps (and at the end).
    eval_every: validation every this many steps (and at the end).
    checkpoint_every: a checkpoint every this many steps (and at the end).
    collect_every: `Iteration.collect` runs before every step divisible by this (OWM).
  """

  steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  collect_every: int = 1


@dataclasses.dataclass(frozen=True)
class Outcome:
  """Where the loop stopped: the state, its step, the step it started from, the best and last
  validation losses (None without validation) and the loop's seconds."""

  state: Any
  step: int
  first_step: int
  best_val_loss: Optional[float]
  last_val_loss: Optional[float]
  seconds: float


class NullWriter:
  """Stands in for MetricWriter on processes other than 0 (one process writes the metrics)."""

  def truncate_after(self, step):
    del step

  def write(self, *args, **kwargs):
    del args, kwargs

  def close(self):
    pass


def check_val_loss(val_loss: float, step: int, ckpt: training.Checkpointer, hint: str) -> None:
  """Raises NonFiniteError for a non-finite validation loss (nothing is saved at that step)."""
  if not math.isfinite(val_loss):
    ckpt.wait()  # Finishes the (finite) saves already started.
    message = (f'Training stopped at step {step}: the validation loss is {val_loss} (the '
               'parameters are finite). Nothing was saved at this step; the newest checkpoint '
               f'is step {ckpt.latest_step()} in {ckpt.directory}. {hint}')
    ckpt.close()
    raise checks.NonFiniteError(message)


def run(state: Any, arrays: Any, root: jax.Array, iteration: Iteration, schedule: Schedule, *,
        validate: Optional[Callable[[Any], dict[str, float]]], ckpt: training.Checkpointer,
        writer: Any, meta: dict[str, Any], hint: str, val_hint: str, desc: str,
        progress: bool) -> Outcome:
  """Runs `iteration` from the state's step to `schedule.steps`.

  Args:
    state: the (replicated) train state.
    arrays: the (replicated) training windows.
    root: the run's root key.
    iteration: the jitted step (and OWM's collect).
    schedule: when to log, validate, save and collect.
    validate: state -> validation metrics with 'loss' (None: no held-out data).
    ckpt: saves the latest steps and the best validation loss (`best/`).
    writer: a `training.MetricWriter` (or `NullWriter`).
    meta: the checkpoint meta; saves add 'best_val_loss'.
    hint: what to change after a non-finite step (in the NonFiniteError).
    val_hint: the same after a non-finite validation loss.
    desc: the progress bar's label.
    progress: show the progress bar.

  Returns:
    The `Outcome` (the checkpoints are written: `ckpt.wait()` returned).
  """
  steps = schedule.steps
  step = first_step = int(jax.device_get(state.step))
  best = ckpt.best_val_loss()
  last_val = None
  collected = {}  # The latest `collect` metrics, logged beside every step's.
  t_loop = time.perf_counter()
  pending = None  # (step, metrics) checked for non-finite values once the next step is queued.

  def check(pending):
    training.check_pending(pending, ckpt, writer, hint)

  with tqdm.tqdm(total=steps, initial=min(step, steps), desc=desc, disable=not progress,
                 dynamic_ncols=True) as bar:
    while step < steps:
      if iteration.collect is not None and step % schedule.collect_every == 0:
        state, collected = iteration.collect(state, arrays, root)
      state, metrics = iteration.step(state, arrays, root)
      step += 1
      check(pending)  # The previous step's (finished by now; this one keeps the device busy).
      pending = (step, metrics)
      bar.update(1)
      do_eval = validate is not None and (step % schedule.eval_every == 0 or step == steps)
      do_ckpt = step % schedule.checkpoint_every == 0 or step == steps
      if do_eval or do_ckpt or step % schedule.log_every == 0:
        check(pending)  # Nothing is logged, validated or saved after a non-finite step.
        pending = None
      if step % schedule.log_every == 0 or step == steps:
        host = {k: v for k, v in jax.device_get({**metrics, **collected}).items()
                if np.ndim(v) == 0}
        host['steps_per_s'] = (step - first_step) / max(time.perf_counter() - t_loop, 1e-9)
        writer.write(step, host)
        bar.set_postfix(loss=f'{float(host["loss"]):.4g}')
      val_loss = None
      if do_eval:
        val_metrics = validate(state)
        val_loss = last_val = val_metrics['loss']
        writer.write(step, val_metrics, split='val')
        check_val_loss(val_loss, step, ckpt, val_hint)
        if best is None or val_loss < best:
          best = val_loss
          ckpt.save_if_best(state, dict(meta, best_val_loss=best), val_loss)
      if do_ckpt:
        ckpt.save(state, dict(meta, best_val_loss=best), val_loss=val_loss)
  if validate is not None and last_val is None:  # Nothing left to train (a finished run).
    last_val = validate(state)['loss']
  ckpt.wait()
  return Outcome(state=state, step=step, first_step=first_step, best_val_loss=best,
                 last_val_loss=last_val, seconds=time.perf_counter() - t_loop)
