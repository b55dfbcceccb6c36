r"""Trains a task's world model (PAPER.md section 2) on `<workdir>/dataset/`.

  python experiments/train_world_model.py --config experiments/configs/wall.py:cpu \
      --workdir runs/wall

Steps: load the dataset (made by experiments/generate_data.py) and split it by trajectory;
pretrain the conv encoder on rendered dataset frames if the config asks for one; train the
predictor and the proprio/action encoders by teacher forcing; write metrics to
`<workdir>/world_model/metrics.jsonl` and TensorBoard (`<workdir>/world_model/tensorboard`);
validate every `train.eval_every` steps on held-out trajectories; checkpoint every
`train.checkpoint_every` steps (the last `train.keep` plus the best by validation loss); finally
evaluate 1- and H-step open-loop latent prediction errors ('history' and 'markov' rollouts) beside
the "predict no change" baseline into `<workdir>/world_model/eval.json`.

Restarted in the same workdir, the run resumes from its latest intact checkpoint (a damaged one is
skipped with a warning and moved to `world_model/corrupt/`) and ends with the same parameters as an
uninterrupted run: every step's data and dropout keys are functions of (seed, step) only. A
checkpoint written with other training settings is refused unless --accept_changed_settings; a
non-finite loss or gradient stops the run before anything non-finite is saved; the workdir is
locked against a second writer; `world_model/done.json` is written last.
"""

import math
import os
import time
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import tqdm

from experiments import cli
from experiments import runtime
from wmjax import checks
from wmjax import data as data_lib
from wmjax import distributed
from wmjax import io
from wmjax import parallel
from wmjax import training
from wmjax.training import pretrain as pretrain_lib



def define_flags() -> tuple[Any, Any]:
  """--config and --workdir; defined only when run as a script, so that tests can import this
  module beside other binaries that define the same flags."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None,
                                'Run directory (DIR/dataset in, DIR/world_model out).')
  accept = flags.DEFINE_bool(
      'accept_changed_settings', False, 'Resume a run whose checkpoint was written with other '
      'training settings (seed, data, train.*), continuing with the new ones.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, accept


DATASET_DIR = 'dataset'
OUT_DIR = 'world_model'
EVAL_FILE = 'eval.json'
ENCODERS = ('identity', 'conv', 'dinov2_vits14')
ROLLOUT_MODES = ('history', 'markov')
# Sub-streams of the run seed (data and dropout keys are fold_in(stream, step)).
_INIT, _DATA, _DROPOUT, _PRETRAIN = 0, 1, 2, 3
# Numeric fields and their valid ranges (checks.range_problem); every other number of the config
# must be finite.
TRAIN_RANGES = {
    **{f'train.{k}': {'low': 0} for k in ('predictor_lr', 'encoder_lr', 'weight_decay',
                                            'grad_clip', 'encoder_pretrain_lr',
                                            'encoder_pretrain_state_weight')},
    'data.val_fraction': {'low': 0, 'high': 1, 'high_open': True},
    'probe.ridge': {'low': 0, 'low_open': True},
}
NONFINITE_HINT = ('Lower train.predictor_lr / train.encoder_lr, set train.grad_clip > 0, or check '
                  'the dataset; then rerun (with --accept_changed_settings to resume from the '
                  'last checkpoint with the new settings).')


def check_config(config: ml_collections.ConfigDict,
                 ranges: dict[str, dict[str, Any]] | None = None) -> None:
  """Raises ValueError on contradictory or invalid model/train settings (before any work).

  Every number of the config must be finite, and those named in `ranges` (default
  `TRAIN_RANGES`; see `wmjax.checks.config_problems`) in their range.
  """
  m, t = config.model, config.train
  errors = []
  if m.encoder not in ENCODERS:
    errors.append(f'model.encoder={m.encoder!r}; choose one of {ENCODERS}')
  if config.get('num_hist') is None or int(config.num_hist) < 1:
    errors.append(f'num_hist must be >= 1 (history frames of the predictor); got '
                  f'{config.get("num_hist")}')
  if int(config.frameskip) < 1:
    errors.append(f'frameskip must be >= 1; got {config.frameskip}')
  if m.encoder == 'dinov2_vits14':
    if not m.dinov2.weights:
      errors.append('model.encoder=dinov2_vits14 needs model.dinov2.weights (path of the ViT-S/14 '
                    'weights); a randomly initialised frozen encoder is useless')
    elif not os.path.isfile(m.dinov2.weights):
      errors.append(f'model.dinov2.weights={m.dinov2.weights!r} is not a file')
  if m.encoder == 'conv':
    stages = 2**len(m.conv.channels)
    if int(config.image_size) % stages:
      errors.append(f'model.encoder=conv with {len(m.conv.channels)} stride-2 stages needs '
                    f'image_size divisible by {stages}; got {config.image_size}')
    if int(t.encoder_pretrain_steps) < 1:
      errors.append('model.encoder=conv needs train.encoder_pretrain_steps >= 1 (a frozen, '
                    'untrained conv encoder is useless)')
  if not 0.0 <= float(m.predictor.dropout) < 1.0:
    errors.append(f'model.predictor.dropout must be in [0, 1); got {m.predictor.dropout}')
  for name in ('depth', 'num_heads', 'head_dim', 'mlp_dim'):
    if int(m.predictor[name]) < 1:
      errors.append(f'model.predictor.{name} must be >= 1; got {m.predictor[name]}')
  for name in ('batch_size', 'log_every', 'eval_every', 'eval_batches', 'checkpoint_every', 'keep',
               'eval_horizon', 'eval_windows'):
    if int(t[name]) < 1:
      errors.append(f'train.{name} must be >= 1; got {t[name]}')
  if int(t.steps) < 0:
    errors.append(f'train.steps must be >= 0; got {t.steps}')
  if int(t.warmup_steps) < 0:
    errors.append(f'train.warmup_steps must be >= 0; got {t.warmup_steps}')
  if t.lr_schedule not in training.optim.SCHEDULES:
    errors.append(f'train.lr_schedule={t.lr_schedule!r}; choose one of '
                  f'{training.optim.SCHEDULES}')
  if int(config.image_size) < 1:
    errors.append(f'image_size must be >= 1; got {config.image_size}')
  if 'probe' in config and int(config.probe.train_frames) > 0 and int(
      config.probe.test_frames) < 1:
    errors.append(f'probe.test_frames must be >= 1 when probe.train_frames > 0; got '
                  f'{config.probe.test_frames}')
  errors += checks.config_problems(config, TRAIN_RANGES if ranges is None else ranges)
  if errors:
    raise ValueError('Invalid config:\n  ' + '\n  '.join(errors))


def load_data(config: ml_collections.ConfigDict, workdir: str, env: Any):
  """Loads and checks `<workdir>/dataset`; returns (dataset, train arrays, val arrays or None)."""
  path = os.path.join(workdir, DATASET_DIR)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'No dataset at {path}. Generate it first:\n  python experiments/generate_data.py '
        f'--config experiments/configs/{config.task}.py:{config.variant} --workdir {workdir}')
  ds = data_lib.load_dataset(path, task=config.task, expected=dict(
      state_size=env.state_size, proprio_size=env.proprio_size, action_size=env.action_size,
      num_hist=int(config.num_hist), frameskip=int(config.frameskip),
      image_size=int(config.image_size)))
  train_ds, val_ds = data_lib.split(ds, float(config.data.val_fraction), int(config.data.seed))
  val = data_lib.to_device(val_ds) if val_ds.num_trajectories else None
  return ds, data_lib.to_device(train_ds), val


def pretrain_encoder(config, env, train: data_lib.WindowArrays, model_kwargs, progress: bool):
  """Pretrains the conv autoencoder on rendered training frames; returns (params, summary)."""
  t = config.train
  states = np.asarray(train.states).reshape(-1, train.states.shape[-1])
  rng = np.random.default_rng(int(config.seed))
  count = min(int(t.encoder_pretrain_images), len(states)) or len(states)
  pick = np.sort(rng.choice(len(states), size=count, replace=False))
  t0 = time.perf_counter()
  images = pretrain_lib.render_frames(env, states[pick], int(config.image_size))
  conv_cfg = dict(model_kwargs['conv'], image_size=int(config.image_size))
  params, metrics = pretrain_lib.pretrain_conv_autoencoder(
      images, conv_cfg, jax.random.fold_in(jax.random.key(int(config.seed)), _PRETRAIN),
      steps=int(t.encoder_pretrain_steps), batch_size=int(t.encoder_pretrain_batch_size),
      learning_rate=float(t.encoder_pretrain_lr), progress=progress,
      # The readout regresses continuous state features (angles as cos and sin: a wrapped angle
      # jumps by 2 pi between nearly identical frames).
      states=(data_lib.readout_targets(config.task, states[pick])
              if float(t.encoder_pretrain_state_weight) > 0 else None),
      state_weight=float(t.encoder_pretrain_state_weight))
  summary = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  summary.update(images=int(count), seconds=time.perf_counter() - t0)
  return params, summary


def make_functions(model, config, env, optimizer, needs_pixels: bool, mesh=None):
  """Jitted (train_iteration, eval_batch, rollout_eval) for this run.

  With a `mesh` (wmjax.parallel.make_mesh) the functions are data parallel: pass the state and
  the training arrays through `parallel.replicate`; each step's global batch is sampled from the
  replicated arrays with the same keys as on one device and split across the devices (pixels are
  rendered per shard), gradients are all-reduced by the compiler, outputs are replicated.
  Evaluation batches are split too when their size divides the device count.
  """
  t = config.train
  num_hist, fs, size = int(config.num_hist), int(config.frameskip), int(config.image_size)
  train_step = training.make_train_step(training.teacher_forcing_loss(model), optimizer)
  eval_step = training.make_eval_step(training.teacher_forcing_loss(model, deterministic=True))

  def train_iteration(state, arrays, root):
    # Keys depend on (seed, step) only, so a resumed run repeats an uninterrupted one.
    data_key = jax.random.fold_in(jax.random.fold_in(root, _DATA), state.step)
    drop_key = jax.random.fold_in(jax.random.fold_in(root, _DROPOUT), state.step)
    batch = data_lib.sample_windows(arrays, data_key, int(t.batch_size), num_hist, fs)
    if mesh is not None:
      batch = parallel.constrain_batch(batch, mesh)
    if needs_pixels:
      batch = data_lib.add_pixels(env, batch, size)
    return train_step(state, batch, drop_key)

  def rollout_eval(params, batch):
    if mesh is not None:
      batch = parallel.constrain_batch(batch, mesh)
    return {mode: training.rollout_errors(model, params, batch, mode=mode)
            for mode in ROLLOUT_MODES}

  def eval_batch(state, batch):
    if mesh is not None:
      batch = parallel.constrain_batch(batch, mesh)
    return eval_step(state, batch, jax.random.key(0))

  if mesh is None:
    return (jax.jit(train_iteration, donate_argnums=0), jax.jit(eval_batch),
            jax.jit(rollout_eval))
  rep = parallel.replicated(mesh)
  return (jax.jit(train_iteration, in_shardings=(rep, rep, rep), out_shardings=(rep, rep),
                  donate_argnums=0),
          jax.jit(eval_batch, out_shardings=rep),
          jax.jit(rollout_eval, out_shardings=rep))


def _render_args(config, env, needs_pixels: bool) -> dict[str, Any]:
  """iterate_windows arguments that add pixels when the encoder reads them."""
  return dict(env=env, image_size=int(config.image_size)) if needs_pixels else {}


def validation_loss(eval_batch, state, val, config, env, needs_pixels) -> dict[str, float]:
  """Mean teacher-forcing metrics over a fixed grid of held-out windows."""
  t = config.train
  batches = data_lib.iterate_windows(
      val, int(t.batch_size), int(config.num_hist), int(config.frameskip),
      max_windows=int(t.eval_batches) * int(t.batch_size),
      **_render_args(config, env, needs_pixels))
  totals, count = {}, 0
  for batch in batches:
    n = batch['actions'].shape[0]
    for k, v in jax.device_get(eval_batch(state, batch)).items():
      totals[k] = totals.get(k, 0.0) + float(v) * n
    count += n
  return {k: v / count for k, v in totals.items()}


def final_evaluation(rollout_eval, params, val, config, env, needs_pixels) -> dict[str, Any]:
  """Open-loop latent prediction errors on held-out windows vs the no-change baseline."""
  t = config.train
  fs = int(config.frameskip)
  horizon = min(int(t.eval_horizon), int(val.actions.shape[1]) // fs)
  batches = data_lib.iterate_windows(
      val, int(t.batch_size), horizon, fs, max_windows=int(t.eval_windows),
      **_render_args(config, env, needs_pixels))
  sums, count = None, 0
  for batch in batches:
    n = batch['actions'].shape[0]
    out = jax.device_get(rollout_eval(params, batch))
    scaled = jax.tree.map(lambda x: np.asarray(x, np.float64) * n, out)
    sums = scaled if sums is None else jax.tree.map(np.add, sums, scaled)
    count += n
  errors = jax.tree.map(lambda x: (x / count).tolist(), sums)
  return {'horizon': horizon, 'windows': count, 'errors': errors}


def probe_evaluation(model, params, config, env, train, val, needs_pixels) -> dict[str, Any]:
  """Linear-probe R^2 of the frozen encoder per state feature (wmjax/training/probe.py): fitted
  on `probe.train_frames` training frames, scored on `probe.test_frames` held-out frames.

  Returns the eval.json entries 'probe_r2' (visual tokens only: does the image code carry the
  state?), 'probe_r2_with_proprio' (the proprio embedding appended) and 'probe' (frame counts,
  ridge); empty when `probe.train_frames` is 0.
  """
  p = config.get('probe')
  if p is None or int(p.train_frames) < 1 or val is None:
    return {}
  render = _render_args(config, env, needs_pixels)
  # Host copies (the same on every process): frames are drawn and encoded on each process alone.
  params, train, val = parallel.gather((params, train, val))
  out = training.probe_encoder(
      model, params, config.task, train, val, env=render.get('env'),
      image_size=render.get('image_size'), train_frames=int(p.train_frames),
      test_frames=int(p.test_frames), ridge=float(p.ridge), seed=int(config.seed))
  return {'probe_r2': out['visual'], 'probe_r2_with_proprio': out['visual_proprio'],
          'probe': {k: out[k] for k in ('train_frames', 'test_frames', 'ridge')}}


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
        visual_proprio=evaluation['probe_r2_with_proprio'])))
  return '\n'.join(lines)


class NullWriter:
  """Stands in for MetricWriter on processes other than 0 (one process writes the metrics)."""

  def truncate_after(self, step):
    del step

  def write(self, *args, **kwargs):
    del args, kwargs

  def close(self):
    pass


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True, mesh=None,
                       accept_changed_settings: bool = False) -> dict[str, Any]:
  """Runs (or resumes) training and the final evaluation; returns a summary dict.

  Training is data parallel over `mesh` (default: every device of every process; the global
  batch `train.batch_size` must divide across them). In a multi-process job every process runs
  this with the same arguments; process 0 holds the workdir lock and writes the metrics,
  eval.json, the done marker and the progress bar, and all take part in the (orbax) checkpoint
  saves.

  A checkpoint written with other training settings is refused (naming each difference) unless
  `accept_changed_settings`. Training stops with `wmjax.checks.NonFiniteError` at the first
  non-finite loss or gradient, before anything non-finite is saved.
  """
  check_config(config)
  with io.workdir_lock(workdir, 'train_world_model', enabled=distributed.is_primary()):
    return _train_and_evaluate(config, workdir, progress, mesh, accept_changed_settings)


def _train_and_evaluate(config, workdir, progress, mesh, accept_changed_settings):
  from wmjax import envs  # pylint: disable=g-import-not-at-top

  t = config.train
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_divisible(int(t.batch_size), mesh, 'train.batch_size')
  primary = distributed.is_primary()
  progress = progress and primary
  env = envs.load(config.task, clip_actions=config.clip_actions)
  ds, train, val = load_data(config, workdir, env)
  out_dir = os.path.join(workdir, OUT_DIR)
  os.makedirs(out_dir, exist_ok=True)

  model_kwargs = training.world_model_kwargs(config, env)
  model = training.build_world_model(model_kwargs)
  needs_pixels = model.obs_key == 'pixels'
  optimizer = training.make_optimizer(t)
  root = jax.random.key(int(config.seed))
  meta = training.make_meta(config, model_kwargs=model_kwargs,
                            dataset_fingerprint=ds.meta['arrays_sha256'][:16])

  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}

  def init_state(encoder_params=None):
    params = model.init(jax.random.fold_in(root, _INIT), obs, encoder_params=encoder_params)
    return training.create_train_state(params, optimizer)

  ckpt = training.Checkpointer(os.path.join(out_dir), keep=int(t.keep))
  t_start = time.perf_counter()
  try:
    start = training.start_or_resume(ckpt, init_state, meta, config,
                                     accept_changed_settings=accept_changed_settings)
  except BaseException:
    ckpt.close()
    raise
  resumed_from = start.step
  meta['run_id'] = start.run_id  # Tells this run's saves (best/ included) from another's.
  if primary:
    io.clear_done(out_dir)  # Written again last, when this run has finished.
  writer = training.MetricWriter(out_dir) if primary else NullWriter()
  pretrain_summary = None
  if resumed_from is not None:
    state, stored = start.state, start.meta
    pretrain_summary = stored.get('encoder_pretraining')
    if primary:
      print(f'Resuming from the checkpoint at step {resumed_from} in {ckpt.directory}.')
      if start.changed_settings:
        print('Continuing with changed training settings:\n  '
              + '\n  '.join(start.changed_settings))
    writer.truncate_after(resumed_from)
  else:
    writer.truncate_after(-1)  # Records of an earlier run without checkpoints.
    encoder_params = None
    if model.encoder_name == 'conv':
      if primary:
        print(f'Pretraining the conv encoder ({t.encoder_pretrain_steps} steps) ...')
      encoder_params, pretrain_summary = pretrain_encoder(config, env, train, model_kwargs,
                                                          progress)
      writer.write(0, pretrain_summary, split='encoder_pretraining')
    state = init_state(encoder_params)
  meta['encoder_pretraining'] = pretrain_summary
  if resumed_from is None and pretrain_summary is not None:
    ckpt.save(state, meta)  # The pretrained encoder is kept even if training stops early.

  train_iteration, eval_batch, rollout_eval = make_functions(model, config, env, optimizer,
                                                             needs_pixels, mesh=mesh)
  # Data parallel: state and training arrays on every device; keys are replicated by jit.
  state, train = parallel.replicate((state, train), mesh)
  steps = int(t.steps)
  step = int(jax.device_get(state.step))
  best = ckpt.best_val_loss()
  last_val = None
  t_loop = time.perf_counter()
  first_step = step
  pending = None  # (step, metrics) checked for non-finite values once the next step is queued.

  def check(pending):
    training.check_pending(pending, ckpt, writer, NONFINITE_HINT)

  with tqdm.tqdm(total=steps, initial=min(step, steps), desc='world model', disable=not progress,
                 dynamic_ncols=True) as bar:
    while step < steps:
      state, metrics = train_iteration(state, train, root)
      step += 1
      check(pending)  # The previous step's (finished by now; this one keeps the device busy).
      pending = (step, metrics)
      bar.update(1)
      do_eval = val is not None and (step % int(t.eval_every) == 0 or step == steps)
      do_ckpt = step % int(t.checkpoint_every) == 0 or step == steps
      if do_eval or do_ckpt or step % int(t.log_every) == 0:
        check(pending)  # Nothing is logged, validated or saved after a non-finite step.
        pending = None
      if step % int(t.log_every) == 0 or step == steps:
        host = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_loop
        host['steps_per_s'] = (step - first_step) / max(elapsed, 1e-9)
        writer.write(step, host)
        bar.set_postfix(loss=f'{float(host["loss"]):.4g}')
      val_loss = None
      if do_eval:
        val_metrics = validation_loss(eval_batch, state, val, config, env, needs_pixels)
        val_loss = last_val = val_metrics['loss']
        writer.write(step, val_metrics, split='val')
        check_val_loss(val_loss, step, ckpt)
        if best is None or val_loss < best:
          best = val_loss
          ckpt.save_if_best(state, dict(meta, best_val_loss=best), val_loss)
      if do_ckpt:
        ckpt.save(state, dict(meta, best_val_loss=best), val_loss=val_loss)
  if val is not None and last_val is None:  # Nothing left to train (a finished run restarted).
    last_val = validation_loss(eval_batch, state, val, config, env, needs_pixels)['loss']
  ckpt.wait()
  train_seconds = time.perf_counter() - t_loop

  summary = {
      'task': config.task, 'variant': config.variant, 'steps': step,
      'resumed_from': resumed_from, 'train_seconds': train_seconds,
      'steps_per_second': (step - first_step) / max(train_seconds, 1e-9),
      'final_val_loss': last_val, 'best_val_loss': best, 'best_step': ckpt.latest_step('best'),
      'num_params': int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
      'encoder': model.encoder_name, 'encoder_pretraining': pretrain_summary,
      'checkpoint_dir': ckpt.directory,
  }
  if val is not None:
    evaluation = final_evaluation(rollout_eval, training.full_params(state), val, config, env,
                                  needs_pixels)
    evaluation.update(step=step, val_loss=last_val, best_val_loss=best)
    evaluation.update(probe_evaluation(model, training.full_params(state), config, env, train,
                                       val, needs_pixels))
    if primary:
      io.write_json(os.path.join(out_dir, EVAL_FILE), evaluation)
    summary['evaluation'] = evaluation
    e = evaluation['errors']
    h = evaluation['horizon']
    for mode in ROLLOUT_MODES:
      for k in sorted({1, h}):
        summary[f'{mode}_{k}step_ratio'] = (
            e[mode]['model']['loss'][k - 1] / max(e[mode]['no_change']['loss'][k - 1], 1e-30))
  writer.close()
  ckpt.close()
  if primary:  # Last: the stage is done.
    io.mark_done(out_dir, [EVAL_FILE] if val is not None else [], step=step,
                 best_step=summary['best_step'])
  summary['total_seconds'] = time.perf_counter() - t_start
  return summary


def check_val_loss(val_loss: float, step: int, ckpt) -> None:
  """Raises NonFiniteError for a non-finite validation loss (nothing is saved at that step)."""
  if not math.isfinite(val_loss):
    ckpt.wait()  # Finishes the (finite) saves already started.
    message = (f'Training stopped at step {step}: the validation loss is {val_loss} (the '
               'parameters are finite). Nothing was saved at this step; the newest checkpoint '
               f'is step {ckpt.latest_step()} in {ckpt.directory}. {NONFINITE_HINT}')
    ckpt.close()
    raise checks.NonFiniteError(message)


SUMMARY_KEYS = ('task', 'variant', 'encoder', 'num_params', 'steps', 'resumed_from',
                'steps_per_second', 'final_val_loss', 'best_val_loss', 'best_step',
                'train_seconds', 'checkpoint_dir')


def print_summary(summary: dict[str, Any], keys: tuple[str, ...] = SUMMARY_KEYS) -> None:
  """The evaluation table (if any), then `keys` of the summary, one per line."""
  if 'evaluation' in summary:
    print(format_table(summary['evaluation']))
  for k in keys:
    v = summary.get(k)
    print(f'{k:<18} {v:.4g}' if isinstance(v, float) else f'{k:<18} {v}')


def main(argv, config_flag, workdir_flag, accept_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  summary = train_and_evaluate(config_flag.value, workdir_flag.value,
                               accept_changed_settings=accept_flag.value)
  if distributed.is_primary():
    print_summary(summary)


def run():
  """Entry point of `wmjax-train` and of `python experiments/train_world_model.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
