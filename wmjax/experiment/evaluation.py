"""Evaluating a world model on held-out windows: validation loss, open-loop errors, tables.

What training, finetuning and the gap diagnostic report about a model (PAPER.md section 2):

  * `validation_loss`: the mean teacher-forcing metrics over a fixed grid of held-out windows;
  * `final_evaluation`: open-loop latent prediction errors up to `train.eval_horizon` steps, for
    the 'history' and 'markov' rollouts, beside the "predict no change" baseline (eval.json);
  * `probe_evaluation`: the linear-probe R^2 of the frozen encoder, and of the state change the
    model predicts (`wmjax.training.probe`);
  * `format_table`: the text table the training binary prints.

The jitted functions come from `eval_functions`; with a mesh their batches are split across the
devices when the batch size divides the device count.
"""

import math
from typing import Any, Callable, Iterable

import jax
import ml_collections
import numpy as np

from wmjax import data as data_lib
from wmjax import parallel
from wmjax import training

ROLLOUT_MODES = ('history', 'markov')


def _jit(fn: Callable[..., Any], mesh) -> Callable[..., Any]:
  return jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=parallel.replicated(mesh))


def _constrain(batch: dict[str, Any], mesh) -> dict[str, Any]:
  return batch if mesh is None else parallel.constrain_batch(batch, mesh)


def rollout_function(model: Any, mesh=None) -> Callable[..., Any]:
  """Jitted `rollout_eval(params, batch) -> {rollout mode: training.rollout_errors}` for
  every mode of `ROLLOUT_MODES`."""

  def rollout_eval(params, batch):
    batch = _constrain(batch, mesh)
    return {mode: training.rollout_errors(model, params, batch, mode=mode)
            for mode in ROLLOUT_MODES}

  return _jit(rollout_eval, mesh)


def eval_functions(model: Any, mesh=None) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """Jitted (eval_batch(state, batch) -> teacher-forcing metrics, `rollout_function`);
  outputs replicated on a mesh."""
  eval_step = training.make_eval_step(training.teacher_forcing_loss(model, deterministic=True))

  def eval_batch(state, batch):
    return eval_step(state, _constrain(batch, mesh), jax.random.key(0))

  return _jit(eval_batch, mesh), rollout_function(model, mesh)


def render_args(config: ml_collections.ConfigDict, env: Any, needs_pixels: bool) -> dict[str, Any]:
  """`iterate_windows` arguments that add pixels when the encoder reads them."""
  return dict(env=env, image_size=int(config.image_size)) if needs_pixels else {}


def mean_errors(rollout_eval: Callable[..., Any], params: Any,
                batches: Iterable[dict[str, Any]]) -> tuple[Any, int]:
  """(`rollout_eval` errors averaged over the windows of `batches`, as lists; window count)."""
  sums, count = None, 0
  for batch in batches:
    n = batch['actions'].shape[0]
    out = jax.device_get(rollout_eval(params, batch))
    scaled = jax.tree.map(lambda x: np.asarray(x, np.float64) * n, out)
    sums = scaled if sums is None else jax.tree.map(np.add, sums, scaled)
    count += n
  return jax.tree.map(lambda x: (x / count).tolist(), sums), count


def validation_loss(eval_batch, state, val, config, env, needs_pixels) -> dict[str, float]:
  """Mean teacher-forcing metrics over a fixed grid of held-out windows."""
  t = config.train
  batches = data_lib.iterate_windows(
      val, int(t.batch_size), int(config.num_hist), int(config.frameskip),
      max_windows=int(t.eval_batches) * int(t.batch_size),
      **render_args(config, env, needs_pixels))
  totals, count = {}, 0
  for batch in batches:
    n = batch['actions'].shape[0]
    for k, v in jax.device_get(eval_batch(state, batch)).items():
      totals[k] = totals.get(k, 0.0) + float(v) * n
    count += n
  return {k: v / count for k, v in totals.items()}


def eval_horizon(config: ml_collections.ConfigDict, val) -> int:
  """Model steps of the held-out evaluations: train.eval_horizon, capped by the trajectories."""
  return min(int(config.train.eval_horizon), int(val.actions.shape[1]) // int(config.frameskip))


def final_evaluation(rollout_eval, params, val, config, env, needs_pixels) -> dict[str, Any]:
  """Open-loop latent prediction errors on held-out windows vs the no-change baseline."""
  t = config.train
  fs = int(config.frameskip)
  horizon = eval_horizon(config, val)
  errors, count = mean_errors(rollout_eval, params, data_lib.iterate_windows(
      val, int(t.batch_size), horizon, fs, max_windows=int(t.eval_windows),
      **render_args(config, env, needs_pixels)))
  return {'horizon': horizon, 'windows': count, 'errors': errors}


def probe_evaluation(model, params, config, env, train, val, needs_pixels) -> dict[str, Any]:
  """Linear-probe R^2 of the frozen encoder per state feature (wmjax/training/probe.py): fitted
  on `probe.train_frames` training frames, scored on `probe.test_frames` held-out frames.

  Returns the eval.json entries 'probe_r2' (visual tokens only: does the image code carry the
  state?), 'probe_r2_with_proprio' (the proprio embedding appended), 'probe_rmse' (the visual
  probe's error in each feature's units: px for positions, to set beside a task's success
  tolerance), 'probe' (frame counts, ridge) and, with `probe.motion_windows` > 0,
  'probe_motion' (`training.probe_motion`: R^2 of the state change the model predicts over
  `train.eval_horizon` steps); empty when `probe.train_frames` is 0.
  """
  p = config.get('probe')
  if p is None or int(p.train_frames) < 1 or val is None:
    return {}
  render = render_args(config, env, needs_pixels)
  # Host copies (the same on every process): frames are drawn and encoded on each process alone.
  params, train, val = parallel.gather((params, train, val))
  out, read = training.probe_encoder(
      model, params, config.task, train, val, env=render.get('env'),
      image_size=render.get('image_size'), train_frames=int(p.train_frames),
      test_frames=int(p.test_frames), ridge=float(p.ridge), seed=int(config.seed),
      return_reader=True)
  result = {'probe_r2': out['visual'], 'probe_r2_with_proprio': out['visual_proprio'],
            'probe_rmse': out['visual_rmse'],
            'probe': {k: out[k] for k in ('train_frames', 'test_frames', 'ridge')}}
  fs = int(config.frameskip)
  horizon = eval_horizon(config, val)
  if int(p.get('motion_windows', 0)) > 0 and horizon >= 1:
    result['probe_motion'] = training.probe_motion(
        model, params, config.task, train, val, frameskip=fs, horizon=horizon,
        env=render.get('env'), image_size=render.get('image_size'),
        windows=int(p.motion_windows), read=read)  # The probe fitted above.
  return result


def format_table(evaluation: dict[str, Any]) -> str:
  """A small text table of the final evaluation (combined visual + proprio MSE)."""
  h = evaluation['horizon']
  lines = [f'Held-out open-loop latent prediction error, {evaluation["windows"]} windows '
           '(MSE over visual + proprio channels; "no change" predicts z_k = z_0):',
           f'{"rollout":<9} {"k":>2} {"model":>11} {"no change":>11} {"ratio":>7}']
  for mode in ROLLOUT_MODES:
    e = evaluation['errors'][mode]
    for k in sorted({1, h}):
      m, b = e['model']['loss'][k - 1], e['no_change']['loss'][k - 1]
      ratio = m / b if b > 0 else math.nan
      lines.append(f'{mode:<9} {k:>2} {m:>11.4g} {b:>11.4g} {ratio:>7.3f}')
  if evaluation.get('probe_r2') is not None:
    lines.append(training.probe.format_probe(dict(
        evaluation['probe'], visual=evaluation['probe_r2'],
        visual_proprio=evaluation['probe_r2_with_proprio'],
        visual_rmse=evaluation.get('probe_rmse'))))
  if evaluation.get('probe_motion') is not None:
    lines.append(training.probe.format_motion(evaluation['probe_motion']))
  return '\n'.join(lines)
