"""The training stage: a task's world model (PAPER.md section 2) from `<workdir>/dataset/`.

Binary: `experiments/train_world_model.py` (`wmjax-train`). `train_and_evaluate` loads the dataset
(`layout.load_data`), pretrains the conv encoder on rendered dataset frames if the config asks
for one (`wmjax.training.pretrain`), starts from another run's model (`train.init_from`: its
encoder and predictor, e.g. to continue on more data) or takes another run's encoder
(`train.encoder_from`: e.g. predictors of other sizes on one latent), trains the predictor and
the proprio/action encoders by teacher forcing (`wmjax.training.iterations`) in the shared step
loop (`loop`), validates and checkpoints on the way, and ends with the held-out evaluation in
`<workdir>/world_model/eval.json`. Restarted in the same workdir it resumes from the latest intact
checkpoint and ends with the same parameters as an uninterrupted run: every step's data and
dropout keys are functions of (seed, step) only. An interrupted encoder pretraining resumes too
(`wmjax.training.pretrain`, `RESUME_FILE` in `<workdir>/world_model/`).
"""

import contextlib
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wmjax import checks
from wmjax import data as data_lib
from wmjax import distributed
from wmjax import io
from wmjax import parallel
from wmjax import training
from wmjax.experiment import evaluation
from wmjax.experiment import layout
from wmjax.experiment import loop
from wmjax.training import iterations
from wmjax.training import pretrain as pretrain_lib
from wmjax.training import probe as probe_lib

ENCODERS = ('identity', 'conv', 'dinov2_vits14')
# Sub-streams of the run seed (data and dropout keys are fold_in(stream, step)).
_INIT, _PRETRAIN = 0, 3
STREAMS = iterations.Streams(data=1, dropout=2)
# Numeric fields and their valid ranges (checks.range_problem); every other number of the config
# must be finite.
TRAIN_RANGES = {
    **{f'train.{k}': {'low': 0} for k in ('predictor_lr', 'encoder_lr', 'weight_decay',
                                            'grad_clip', 'encoder_pretrain_lr',
                                            'encoder_pretrain_state_weight',
                                            'predictor_readout_weight')},
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
  for field, what in (('init_from', 'a world model to start from'),
                      ('encoder_from', 'a world model whose encoder to use')):
    if t.get(field) and not os.path.isdir(t[field]):
      errors.append(f'train.{field}={t[field]!r} is not a directory ({what}: <run>/world_model; '
                    '"" trains from scratch)')
  if t.get('init_from') and t.get('encoder_from'):
    errors.append('train.init_from and train.encoder_from are both set: init_from already takes '
                  'the encoder with the predictor; set one of them')
  if m.encoder == 'conv':
    stages = 2**len(m.conv.channels)
    if int(config.image_size) % stages:
      errors.append(f'model.encoder=conv with {len(m.conv.channels)} stride-2 stages needs '
                    f'image_size divisible by {stages}; got {config.image_size}')
    if int(t.encoder_pretrain_steps) < 1:
      errors.append('model.encoder=conv needs train.encoder_pretrain_steps >= 1 (a frozen, '
                    'untrained conv encoder is useless)')
  if t.get('encoder_pretrain_feature_weights'):
    if m.encoder != 'conv' or float(t.encoder_pretrain_state_weight) <= 0:
      errors.append(f'train.encoder_pretrain_feature_weights='
                    f'{t.encoder_pretrain_feature_weights!r} weighs the state readout of conv '
                    f'pretraining; it needs model.encoder=conv and '
                    f'train.encoder_pretrain_state_weight > 0')
    try:
      data_lib.readout_weights(config.task, t.encoder_pretrain_feature_weights)
    except ValueError as e:
      errors.append(f'train.encoder_pretrain_feature_weights: {e}')
  if float(t.get('predictor_readout_weight', 0.0)) > 0:
    if 'probe' not in config or int(config.probe.train_frames) < 1:
      errors.append('train.predictor_readout_weight > 0 fits its probe on probe.train_frames '
                    'training frames: set probe.train_frames >= 1.')
    try:
      data_lib.readout_weights(config.task, t.predictor_readout_features)
    except ValueError as e:
      errors.append(f'train.predictor_readout_features: {e}')
  elif t.get('predictor_readout_features'):
    errors.append(f'train.predictor_readout_features={t.predictor_readout_features!r} weighs the '
                  'read-out term of the predictor\'s loss, which train.predictor_readout_weight=0 '
                  'turns off: set a weight > 0 or leave the features empty.')
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
  if float(config.get('token_cache_gb', 0.0)) < 0:
    errors.append(f'token_cache_gb must be >= 0 (0: no token cache); got '
                  f'{config.token_cache_gb}')
  if 'probe' in config and int(config.probe.train_frames) > 0 and int(
      config.probe.test_frames) < 1:
    errors.append(f'probe.test_frames must be >= 1 when probe.train_frames > 0; got '
                  f'{config.probe.test_frames}')
  errors += checks.config_problems(config, TRAIN_RANGES if ranges is None else ranges)
  checks.raise_config_errors(errors, 'config')


def pretrain_encoder(config, env, train: data_lib.WindowArrays, model_kwargs, progress: bool,
                     resume_file: str | None = None):
  """Pretrains the conv autoencoder on rendered training frames; returns (params, summary).

  With `resume_file` the pretraining state is written there every `train.checkpoint_every`
  steps (by process 0) and a restarted run continues from it.
  """
  t = config.train
  states = np.asarray(train.states).reshape(-1, train.states.shape[-1])
  rng = np.random.default_rng(int(config.seed))
  count = min(int(t.encoder_pretrain_images), len(states)) or len(states)
  pick = np.sort(rng.choice(len(states), size=count, replace=False))
  t0 = time.perf_counter()
  images = pretrain_lib.render_frames(env, states[pick], int(config.image_size))
  conv_cfg = dict(model_kwargs['conv'], image_size=int(config.image_size))
  readout = float(t.encoder_pretrain_state_weight) > 0
  params, metrics = pretrain_lib.pretrain_conv_autoencoder(
      images, conv_cfg, jax.random.fold_in(jax.random.key(int(config.seed)), _PRETRAIN),
      steps=int(t.encoder_pretrain_steps), batch_size=int(t.encoder_pretrain_batch_size),
      learning_rate=float(t.encoder_pretrain_lr), progress=progress,
      # The readout regresses continuous state features (angles as cos and sin: a wrapped angle
      # jumps by 2 pi between nearly identical frames).
      states=data_lib.readout_targets(config.task, states[pick]) if readout else None,
      feature_weights=(data_lib.readout_weights(
          config.task, t.get('encoder_pretrain_feature_weights', '')) if readout else None),
      state_weight=float(t.encoder_pretrain_state_weight), resume_file=resume_file,
      save_every=int(t.checkpoint_every), write_resume=distributed.is_primary())
  summary = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  summary.update(images=int(count), seconds=time.perf_counter() - t0)
  return params, summary


def predictor_readout(config, model, params, env, train: data_lib.WindowArrays
                      ) -> training.losses.Readout:
  """The read-out term of the predictor's loss (`train.predictor_readout_*`): a ridge probe
  from the frozen visual latent to the task's state features, in their training standard
  deviations, fitted on `probe.train_frames` training frames (the frames and ridge the probe of
  eval.json uses, so a resumed run fits the same map)."""
  p, t = config.probe, config.train
  states, proprio = probe_lib.sample_frames(train, int(p.train_frames), int(config.seed))
  latents = probe_lib.encode_frames(model, params, states, proprio, env, int(config.image_size))
  matrix = probe_lib.probe_matrix(latents['visual'],
                                  data_lib.readout_targets(config.task, states), float(p.ridge))
  weights = data_lib.readout_weights(config.task, t.predictor_readout_features)
  return training.losses.Readout(jnp.asarray(matrix), jnp.asarray(weights, jnp.float32),
                                 float(t.predictor_readout_weight))


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
  with (io.workdir_lock(workdir, 'train_world_model', enabled=distributed.is_primary()),
        contextlib.ExitStack() as closing):  # Closes the checkpointer and writer on any exit.
    return _train_and_evaluate(config, workdir, progress, mesh, accept_changed_settings, closing)


def _train_and_evaluate(config, workdir, progress, mesh, accept_changed_settings, closing):
  t = config.train
  mesh, env, ds, train, val, model_kwargs, model, meta = layout.model_inputs(
      config, workdir, t.batch_size, 'train.batch_size', mesh)
  primary = distributed.is_primary()
  progress = progress and primary
  out_dir = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  os.makedirs(out_dir, exist_ok=True)
  resume_file = os.path.join(out_dir, pretrain_lib.RESUME_FILE)

  needs_pixels = model.obs_key == 'pixels'
  optimizer = training.make_optimizer(t)
  root = jax.random.key(int(config.seed))

  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}

  def init_state(encoder_params=None):
    params = model.init(jax.random.fold_in(root, _INIT), obs, encoder_params=encoder_params)
    return training.create_train_state(params, optimizer)

  ckpt = closing.enter_context(training.Checkpointer(out_dir, keep=int(t.keep)))
  t_start = time.perf_counter()
  start = training.start_or_resume(ckpt, init_state, meta, config,
                                   accept_changed_settings=accept_changed_settings)
  resumed_from = start.step
  meta['run_id'] = start.run_id  # Tells this run's saves (best/ included) from another's.
  if primary:
    io.clear_done(out_dir)  # Written again last, when this run has finished.
  writer = closing.enter_context(training.MetricWriter(out_dir)) if primary else loop.NullWriter()
  pretrain_summary = initial = None
  if resumed_from is not None:
    state, stored = start.state, start.meta
    pretrain_summary = stored.get('encoder_pretraining')
    initial = stored.get('initialised_from')
    if primary:
      print(f'Resuming from the checkpoint at step {resumed_from} in {ckpt.directory}.')
      if start.changed_settings:
        print('Continuing with changed training settings:\n  '
              + '\n  '.join(start.changed_settings))
    writer.truncate_after(resumed_from)
  else:
    writer.truncate_after(-1)  # Records of an earlier run without checkpoints.
    if t.get('init_from'):  # Absent from configs written before the field existed.
      target = jax.eval_shape(lambda: model.init(jax.random.key(0), obs))
      params, initial = layout.load_params(t.init_from, 'latest', meta, target,
                                           keys=('task', 'model_config'),
                                           flag='train.init_from', label='initial')
      pretrain_summary = initial.pop('encoder_pretraining')
      initial['parts'] = 'encoder and predictor'
      state = training.create_train_state(params, optimizer)
      if primary:
        print(f'Starting from the world model at {initial["path"]} (step {initial["step"]}): '
              'its encoder and predictor, a fresh optimiser, no encoder pretraining.')
    elif t.get('encoder_from'):
      encoder_params, initial = layout.load_encoder(t.encoder_from, meta,
                                                    flag='train.encoder_from')
      pretrain_summary = initial.pop('encoder_pretraining')
      initial['parts'] = 'encoder'
      state = init_state(encoder_params)
      if primary:
        print(f'Using the encoder of the world model at {initial["path"]} (step '
              f'{initial["step"]}): no encoder pretraining; a new predictor.')
    else:
      encoder_params = None
      if model.encoder_name == 'conv':
        if primary:
          print(f'Pretraining the conv encoder ({t.encoder_pretrain_steps} steps) ...')
        encoder_params, pretrain_summary = pretrain_encoder(config, env, train, model_kwargs,
                                                            progress, resume_file)
        if primary and pretrain_summary['resumed_from_step']:
          print(f'Resumed the encoder pretraining at step '
                f'{int(pretrain_summary["resumed_from_step"])} from {resume_file}.')
        writer.write(0, pretrain_summary, split='encoder_pretraining')
      state = init_state(encoder_params)
  meta['encoder_pretraining'] = pretrain_summary
  meta['initialised_from'] = initial
  if resumed_from is None and pretrain_summary is not None and initial is None:
    ckpt.save(state, meta)  # The pretrained encoder is kept even if training stops early.
    ckpt.wait('latest')
  if (primary and initial is None and pretrain_summary is not None
      and os.path.exists(resume_file)):  # Its encoder is in a checkpoint now.
    os.remove(resume_file)

  train, note = training.maybe_add_tokens(model, training.full_params(state), train, env,
                                          int(config.image_size), float(config.token_cache_gb))
  if primary:
    print(f'{note[0].upper()}{note[1:]}.')
  windows = iterations.Windows(env, int(config.num_hist), int(config.frameskip),
                               int(config.image_size), needs_pixels, mesh)
  readout = None
  if float(t.get('predictor_readout_weight', 0.0)) > 0:
    readout = predictor_readout(config, model, training.full_params(state), env, train)
    if primary:
      print(f'Predictor loss: latent MSE + {readout.weight:g} x the read-out error of '
            f'{readout.matrix.shape[1]} state features (probe on {config.probe.train_frames} '
            'training frames).')
  iteration = iterations.teacher_forcing_iteration(model, optimizer, windows, int(t.batch_size),
                                                   STREAMS, readout=readout)
  eval_batch, rollout_eval = evaluation.eval_functions(model, mesh)
  # Data parallel: state and training arrays on every device; keys are replicated by jit.
  state, train = parallel.replicate((state, train), mesh)
  validate = None if val is None else (lambda state: evaluation.validation_loss(
      eval_batch, state, val, config, env, needs_pixels))
  out = loop.run(
      state, train, root, iteration,
      loop.Schedule(steps=int(t.steps), log_every=int(t.log_every),
                    eval_every=int(t.eval_every), checkpoint_every=int(t.checkpoint_every)),
      validate=validate, ckpt=ckpt, writer=writer, meta=meta, hint=NONFINITE_HINT,
      val_hint=NONFINITE_HINT, desc='world model', progress=progress)
  state, step, best, last_val = out.state, out.step, out.best_val_loss, out.last_val_loss

  summary = {
      'task': config.task, 'variant': config.variant, 'steps': step,
      'resumed_from': resumed_from, 'train_seconds': out.seconds,
      'steps_per_second': (step - out.first_step) / max(out.seconds, 1e-9),
      'final_val_loss': last_val, 'best_val_loss': best, 'best_step': ckpt.latest_step('best'),
      'num_params': int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
      'encoder': model.encoder_name, 'encoder_pretraining': pretrain_summary,
      'initialised_from': initial, 'checkpoint_dir': ckpt.directory,
  }
  if val is not None:
    result = evaluation.final_evaluation(rollout_eval, training.full_params(state), val, config,
                                         env, needs_pixels)
    result.update(step=step, val_loss=last_val, best_val_loss=best)
    result.update(evaluation.probe_evaluation(model, training.full_params(state), config, env,
                                              train, val, needs_pixels))
    if primary:
      io.write_json(os.path.join(out_dir, layout.EVAL_FILE), result)
    summary['evaluation'] = result
    e = result['errors']
    h = result['horizon']
    for mode in evaluation.ROLLOUT_MODES:
      for k in sorted({1, h}):
        summary[f'{mode}_{k}step_ratio'] = (
            e[mode]['model']['loss'][k - 1] / max(e[mode]['no_change']['loss'][k - 1], 1e-30))
  writer.close()
  ckpt.close()
  if primary:  # Last: the stage is done.
    io.mark_done(out_dir, [layout.EVAL_FILE] if val is not None else [], step=step,
                 best_step=summary['best_step'])
  summary['total_seconds'] = time.perf_counter() - t_start
  return summary


SUMMARY_KEYS = ('task', 'variant', 'encoder', 'num_params', 'steps', 'resumed_from',
                'steps_per_second', 'final_val_loss', 'best_val_loss', 'best_step',
                'train_seconds', 'checkpoint_dir')


def print_summary(summary: dict[str, Any], keys: tuple[str, ...] = SUMMARY_KEYS) -> None:
  """The evaluation table (if any), then `keys` of the summary, one per line."""
  if 'evaluation' in summary:
    print(evaluation.format_table(summary['evaluation']))
  for k in keys:
    v = summary.get(k)
    print(f'{k:<18} {v:.4g}' if isinstance(v, float) else f'{k:<18} {v}')

