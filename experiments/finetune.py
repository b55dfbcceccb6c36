r"""Finetunes a trained world model with AWM or OWM (PAPER.md section 4).

  python experiments/finetune.py --config experiments/configs/wall.py:cpu \
      --config.finetune.method=adversarial --workdir runs/wall

Reads the base model from `<workdir>/world_model` (or `--config.finetune.pretrained`), checks that
it was trained on this task, model config and dataset, and writes `<workdir>/finetune_<method>/`:
orbax checkpoints (latest k + best by validation loss), metrics.jsonl, TensorBoard events and
eval.json (held-out open-loop errors beside "predict no change", as after training), so every
tool that reads a world model (experiments/plan.py --checkpoint, load_world_model) reads it too.

- adversarial (AWM): every batch is trained on predictor inputs perturbed by one FGSM step with
  random start, against the clean targets (`wmjax.training.adversarial_loss`); the radii live in
  the train state.
- online (OWM): every `finetune.online.every` steps, plans from dataset segments are executed in
  the simulator and the executed windows go into a replay buffer (part of the train state, so it is
  checkpointed); each batch mixes offline windows with buffer windows.

Killed and restarted in the same workdir, the run resumes from its latest checkpoint; every step's
data, dropout, attack and planning keys are functions of (seed, step) only.
"""

import copy
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
from experiments import train_world_model as train_lib
from wmjax import checks
from wmjax import data as data_lib
from wmjax import distributed
from wmjax import io
from wmjax import parallel
from wmjax import training
from wmjax.data import replay
from wmjax.training import checkpoint as checkpoint_lib
from wmjax.training import online as online_lib

METHODS = ('adversarial', 'online')
OUT_PREFIX = 'finetune_'
# What a finetuning run's result depends on besides the model, task and dataset; compared when
# resuming.
FINETUNE_SETTINGS = training.checkpoint.TRAINING_SETTINGS + ('finetune', 'plan.alpha')
FINETUNE_RANGES = {
    'finetune.predictor_lr': {'low': 0}, 'finetune.encoder_lr': {'low': 0},
    'finetune.online.lr': {'low': 0},
    'finetune.online.online_fraction': {'low': 0, 'high': 1, 'low_open': True,
                                        'high_open': True},
    'plan.alpha': {'low': 0},
}
NONFINITE_HINT = ('Lower finetune.predictor_lr / finetune.encoder_lr (or the attack radii), set '
                  'train.grad_clip > 0, or check the base model; then rerun (with '
                  '--accept_changed_settings to resume from the last checkpoint).')
# Sub-streams of the run seed, apart from those of pretraining.
_DATA, _DROPOUT, _ONLINE, _ONLINE_DATA = 11, 12, 13, 14


def define_flags() -> tuple[Any, Any]:
  """--config and --workdir (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string(
      'workdir', None, 'Run directory (DIR/dataset and DIR/world_model in, '
      'DIR/finetune_<method> out).')
  accept = flags.DEFINE_bool(
      'accept_changed_settings', False, 'Resume a finetuning run whose checkpoint was written '
      'with other settings (seed, data, train.*, finetune.*), continuing with the new ones.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, accept


def out_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return os.path.join(workdir, OUT_PREFIX + config.finetune.method)


def adversarial_config(config: ml_collections.ConfigDict) -> training.AdversarialConfig:
  return training.AdversarialConfig(**config.finetune.adversarial.to_dict())


def online_split(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(offline, buffer) windows per batch."""
  f = config.finetune
  num_online = int(round(int(f.batch_size) * float(f.online.online_fraction)))
  return int(f.batch_size) - num_online, num_online


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError on invalid or contradictory finetuning settings (before any work)."""
  train_lib.check_config(config, ranges={**train_lib.TRAIN_RANGES, **FINETUNE_RANGES})
  f = config.finetune
  errors = []
  if f.method not in METHODS:
    errors.append(f'finetune.method={f.method!r}; choose one of {METHODS}')
  if f.pretrained_checkpoint not in checkpoint_lib.WHICH:
    errors.append(f'finetune.pretrained_checkpoint={f.pretrained_checkpoint!r}; choose one of '
                  f'{checkpoint_lib.WHICH}')
  if int(f.steps) < 0:
    errors.append(f'finetune.steps must be >= 0; got {f.steps}')
  for name in ('batch_size', 'log_every', 'eval_every', 'checkpoint_every'):
    if int(f[name]) < 1:
      errors.append(f'finetune.{name} must be >= 1; got {f[name]}')
  if f.method == 'adversarial':
    try:
      adversarial_config(config)
    except (ValueError, TypeError) as e:
      errors.append(f'finetune.adversarial: {e}')
  if f.method == 'online':
    o = f.online
    if int(o.goal_horizon) > int(o.planner_horizon):
      errors.append(f'finetune.online.goal_horizon={o.goal_horizon} is longer than the planner\'s '
                    f'horizon finetune.online.planner_horizon={o.planner_horizon}: the plan could '
                    'not reach the goal; lower goal_horizon or raise planner_horizon')
    if int(o.goal_horizon) < 1:
      errors.append(f'finetune.online.goal_horizon must be >= 1; got {o.goal_horizon}')
    if int(o.planner_horizon) < int(config.num_hist):
      errors.append(f'finetune.online.planner_horizon={o.planner_horizon} gives no window of '
                    f'num_hist={config.num_hist} actions; it must be >= num_hist')
    for name in ('every', 'num_segments', 'num_steps', 'capacity'):
      if int(o[name]) < 1:
        errors.append(f'finetune.online.{name} must be >= 1; got {o[name]}')
    if o.rollout not in train_lib.ROLLOUT_MODES:
      errors.append(f'finetune.online.rollout={o.rollout!r}; choose one of '
                    f'{train_lib.ROLLOUT_MODES}')
    if checks.range_problem(o.online_fraction, 'online_fraction', low=0, high=1, low_open=True,
                            high_open=True) is None:
      num_offline, num_online = online_split(config)
      if num_offline < 1 or num_online < 1:
        errors.append(f'finetune.batch_size={f.batch_size} with online_fraction='
                      f'{o.online_fraction} leaves {num_offline} offline and {num_online} buffer '
                      'windows per batch; both must be >= 1')
  if errors:
    raise ValueError('Invalid finetune config:\n  ' + '\n  '.join(errors))


def finetune_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The optimiser settings of finetuning: config.train with the finetuning lrs and steps."""
  t = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  t.predictor_lr = float(config.finetune.predictor_lr)
  t.encoder_lr = float(config.finetune.encoder_lr)
  t.steps = int(config.finetune.steps)
  return t


def load_pretrained(config, workdir: str, meta: dict[str, Any], target_params):
  """Full parameters of the base model, checked against this run's task, model and dataset.

  Args:
    config: run config.
    workdir: run directory.
    meta: this run's checkpoint meta (task, model_config, dataset_fingerprint are compared).
    target_params: abstract full parameters of the configured model (structure, shapes, dtypes).

  Returns:
    (params, info): params shaped like `target_params`; info names the checkpoint and its step.
  """
  f = config.finetune
  path = f.pretrained or os.path.join(workdir, train_lib.OUT_DIR)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'No pretrained world model at {path}. Train one first:\n  python '
        f'experiments/train_world_model.py --config experiments/configs/{config.task}.py:'
        f'{config.variant} --workdir {workdir}\nor set --config.finetune.pretrained=DIR.')
  ckpt = training.Checkpointer(checkpoint_lib.resolve_checkpoint_dir(path), async_save=False)
  try:
    which = f.pretrained_checkpoint
    if which == 'best' and ckpt.latest_step('best') is None:
      which = 'latest'
    try:
      stored = ckpt.read_meta(which)
    except training.CorruptCheckpointError as e:
      raise training.CorruptCheckpointError(
          f'The pretrained checkpoint is damaged: {e} Choose another one '
          '(--config.finetune.pretrained_checkpoint) or retrain.') from e
    if stored is None:
      raise ValueError(f'No {which} checkpoint in {ckpt.directory}.')
    where = f'{ckpt.directory} ({which}, step {stored.get("step")})'
    try:
      checkpoint_lib.check_meta(stored, meta, where=where)
    except ValueError as e:
      raise ValueError(f'The pretrained checkpoint does not match this finetune config. {e}'
                       ) from None
    trainable, frozen = training.split_params(target_params)
    expected = training.TrainState(step=None, params=trainable, frozen=frozen, opt_state=None)
    checkpoint_lib.check_shapes(stored.get('shapes', {}),
                                checkpoint_lib.param_shapes(expected), where=where)
    try:
      raw, _ = ckpt.restore_raw(which, stored['step'])
    except training.CorruptCheckpointError as e:
      raise training.CorruptCheckpointError(
          f'The pretrained checkpoint is damaged: {e} Choose another one '
          '(--config.finetune.pretrained_checkpoint) or retrain.') from e
  finally:
    ckpt.close()
  full = {**raw['params'], **raw['frozen']}
  params = jax.tree.map(lambda t, x: jnp.asarray(x, t.dtype), target_params, full)
  return params, {'path': os.path.abspath(ckpt.directory), 'which': which,
                  'step': stored.get('step'), 'val_loss': stored.get('val_loss')}


def make_train_iteration(config, env, model, optimizer, stats, needs_pixels: bool, mesh):
  """Jitted (init_extra, train_iteration, collect or None) for the configured method.

  Data parallel over `mesh` as in training (experiments/train_world_model.py): state and arrays
  replicated, each global batch sampled with the same keys as on one device and split across the
  devices before its pixels are rendered.
  """
  f = config.finetune
  num_hist, fs, size = int(config.num_hist), int(config.frameskip), int(config.image_size)
  keys = lambda root, stream, step: jax.random.fold_in(jax.random.fold_in(root, stream), step)

  def offline_batch(arrays, key, batch_size):
    return data_lib.sample_windows(arrays, key, batch_size, num_hist, fs)

  def render(batch):
    batch = parallel.constrain_batch(batch, mesh)
    return data_lib.add_pixels(env, batch, size) if needs_pixels else batch

  rep = parallel.replicated(mesh)
  jit_step = lambda fn: jax.jit(fn, in_shardings=(rep, rep, rep), out_shardings=(rep, rep),
                                donate_argnums=0)

  if f.method == 'adversarial':
    awm = adversarial_config(config)
    step_fn = training.make_train_step(training.adversarial_loss(model, awm), optimizer,
                                       stateful=True)

    def init_extra(params, arrays, root):
      # Paper (section 4): radii fixed from the first minibatch (or recomputed per batch).
      batch = render(offline_batch(arrays, keys(root, _DATA, 0), int(f.batch_size)))
      trainable, frozen = training.split_params(params)
      return training.init_extra(model, trainable, frozen, batch, awm)

    def train_iteration(state, arrays, root):
      batch = render(offline_batch(arrays, keys(root, _DATA, state.step), int(f.batch_size)))
      return step_fn(state, batch, keys(root, _DROPOUT, state.step))

    return jax.jit(init_extra, out_shardings=rep), jit_step(train_iteration), None

  o = f.online
  num_offline, num_online = online_split(config)
  step_fn = training.make_train_step(training.teacher_forcing_loss(model), optimizer)

  def init_extra(params, arrays, root):
    del params, root
    example = jax.tree.map(lambda x: x[0], offline_batch(arrays, jax.random.key(0), 1))
    return {'buffer': replay.init_buffer(example, int(o.capacity))}

  planner = online_lib.owm_planner(int(o.planner_horizon), fs * env.action_size, lr=float(o.lr),
                                   num_steps=int(o.num_steps))

  def collect(state, arrays, root):
    # Section 4 (OWM): plan, execute in the simulator, add the executed windows to the buffer.
    windows, info = online_lib.collect_windows(
        env, model, training.full_params(state), stats, arrays, keys(root, _ONLINE, state.step),
        planner=planner, num_segments=int(o.num_segments), goal_horizon=int(o.goal_horizon),
        num_hist=num_hist, frameskip=fs, objective=o.objective, rollout=o.rollout,
        alpha=float(config.plan.alpha))
    buffer = replay.insert(state.extra['buffer'], windows)
    metrics = {'owm/goal_distance': jnp.mean(info['goal_distance']),
               'owm/plan_cost': jnp.mean(info['plan_cost']),
               'owm/buffer_size': buffer.size}
    return state.replace(extra=dict(state.extra, buffer=buffer)), metrics

  def train_iteration(state, arrays, root):
    key_off, key_on = jax.random.split(keys(root, _DATA, state.step))
    batch = replay.mix_batches(
        offline_batch(arrays, key_off, num_offline),
        replay.sample(state.extra['buffer'], key_on, num_online))
    return step_fn(state, render(batch), keys(root, _DROPOUT, state.step))

  return jax.jit(init_extra, out_shardings=rep), jit_step(train_iteration), jit_step(collect)


def finetune(config: ml_collections.ConfigDict, workdir: str, progress: bool = True,
             mesh=None, accept_changed_settings: bool = False) -> dict[str, Any]:
  """Runs (or resumes) finetuning and the final evaluation; returns a summary dict.

  Data parallel over `mesh` (default: every device of every process; `finetune.batch_size` must
  divide across them); in a multi-process job process 0 holds the workdir lock and writes
  metrics, eval.json and the done marker. As in training, a checkpoint of other settings is
  refused unless `accept_changed_settings`, and a non-finite loss or gradient stops the run
  (`wmjax.checks.NonFiniteError`) before anything non-finite is saved.
  """
  check_config(config)
  with io.workdir_lock(workdir, f'finetune ({config.finetune.method})',
                       enabled=distributed.is_primary()):
    return _finetune(config, workdir, progress, mesh, accept_changed_settings)


def _finetune(config, workdir, progress, mesh, accept_changed_settings):
  from wmjax import envs  # pylint: disable=g-import-not-at-top

  f = config.finetune
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_divisible(int(f.batch_size), mesh, 'finetune.batch_size')
  primary = distributed.is_primary()
  progress = progress and primary
  say = print if primary else (lambda *a, **k: None)
  env = envs.load(config.task, clip_actions=config.clip_actions)
  ds, train, val = train_lib.load_data(config, workdir, env)
  stats = data_lib.stats_from_meta(ds.meta)
  directory = out_dir(config, workdir)
  os.makedirs(directory, exist_ok=True)

  model_kwargs = training.world_model_kwargs(config, env)
  model = training.build_world_model(model_kwargs)
  needs_pixels = model.obs_key == 'pixels'
  optimizer = training.make_optimizer(finetune_train_config(config))
  root = jax.random.key(int(config.seed))
  meta = training.make_meta(config, model_kwargs=model_kwargs,
                            dataset_fingerprint=ds.meta['arrays_sha256'][:16])
  init_extra, train_iteration, collect = make_train_iteration(
      config, env, model, optimizer, stats, needs_pixels, mesh)
  obs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  target_params = jax.eval_shape(lambda: model.init(jax.random.key(0), obs))

  def make_state(params):
    return training.create_train_state(params, optimizer,
                                       extra=init_extra(params, train, root))

  ckpt = training.Checkpointer(directory, keep=int(config.train.keep))
  t_start = time.perf_counter()
  try:
    start = training.start_or_resume(ckpt, make_state, meta, config, target_args=(target_params,),
                                     settings=FINETUNE_SETTINGS,
                                     accept_changed_settings=accept_changed_settings)
  except BaseException:
    ckpt.close()
    raise
  resumed_from = start.step
  meta['run_id'] = start.run_id  # Tells this run's saves (best/ included) from another's.
  if primary:
    io.clear_done(directory)  # Written again last, when this run has finished.
  writer = training.MetricWriter(directory) if primary else train_lib.NullWriter()
  if resumed_from is not None:
    state, stored = start.state, start.meta
    base_info = stored.get('pretrained')
    say(f'Resuming {f.method} finetuning from step {resumed_from} in {ckpt.directory}.')
    if start.changed_settings:
      say('Continuing with changed settings:\n  ' + '\n  '.join(start.changed_settings))
    writer.truncate_after(resumed_from)
  else:
    writer.truncate_after(-1)  # Records of an earlier run without checkpoints.
    params, base_info = load_pretrained(config, workdir, meta, target_params)
    state = make_state(params)
    say(f'Finetuning ({f.method}) the world model at {base_info["path"]} '
        f'({base_info["which"]}, step {base_info["step"]}).')
  meta.update(pretrained=base_info, finetune_method=f.method)

  _, eval_batch, rollout_eval = train_lib.make_functions(model, config, env, optimizer,
                                                         needs_pixels, mesh=mesh)
  state, train = parallel.replicate((state, train), mesh)
  steps = int(f.steps)
  step = int(jax.device_get(state.step))
  first_step = step
  best = ckpt.best_val_loss()
  if resumed_from is None and val is not None:
    # The base model's validation loss, recorded as step 0 for reference; `best/` only ever
    # holds finetuned states (AWM trades some clean error for robustness).
    base_val = train_lib.validation_loss(eval_batch, state, val, config, env, needs_pixels)
    writer.write(0, base_val, split='val')
  last_val = None
  online_metrics = {}
  t_loop = time.perf_counter()
  pending = None  # (step, metrics) checked for non-finite values once the next step is queued.

  def check(pending):
    training.check_pending(pending, ckpt, writer, NONFINITE_HINT)

  with tqdm.tqdm(total=steps, initial=min(step, steps), desc=f'finetune ({f.method})',
                 disable=not progress, dynamic_ncols=True) as bar:
    while step < steps:
      if collect is not None and step % int(f.online.every) == 0:
        state, online_metrics = collect(state, train, root)
      state, metrics = train_iteration(state, train, root)
      step += 1
      check(pending)  # The previous step's (finished by now; this one keeps the device busy).
      pending = (step, metrics)
      bar.update(1)
      do_eval = val is not None and (step % int(f.eval_every) == 0 or step == steps)
      do_ckpt = step % int(f.checkpoint_every) == 0 or step == steps
      if do_eval or do_ckpt or step % int(f.log_every) == 0:
        check(pending)  # Nothing is logged, validated or saved after a non-finite step.
        pending = None
      if step % int(f.log_every) == 0 or step == steps:
        host = {k: v for k, v in jax.device_get({**metrics, **online_metrics}).items()
                if np.ndim(v) == 0}
        host['steps_per_s'] = (step - first_step) / max(time.perf_counter() - t_loop, 1e-9)
        writer.write(step, host)
        bar.set_postfix(loss=f'{float(host["loss"]):.4g}')
      val_loss = None
      if do_eval:
        val_metrics = train_lib.validation_loss(eval_batch, state, val, config, env, needs_pixels)
        val_loss = last_val = val_metrics['loss']
        writer.write(step, val_metrics, split='val')
        train_lib.check_val_loss(val_loss, step, ckpt)
        if best is None or val_loss < best:
          best = val_loss
          ckpt.save_if_best(state, dict(meta, best_val_loss=best), val_loss)
      if do_ckpt:
        ckpt.save(state, dict(meta, best_val_loss=best), val_loss=val_loss)
  if val is not None and last_val is None:
    last_val = train_lib.validation_loss(eval_batch, state, val, config, env, needs_pixels)['loss']
  ckpt.wait()
  seconds = time.perf_counter() - t_loop

  summary = {
      'task': config.task, 'variant': config.variant, 'method': f.method, 'steps': step,
      'resumed_from': resumed_from, 'pretrained': base_info, 'finetune_seconds': seconds,
      'steps_per_second': (step - first_step) / max(seconds, 1e-9),
      'final_val_loss': last_val, 'best_val_loss': best, 'checkpoint_dir': ckpt.directory,
  }
  if val is not None:
    evaluation = train_lib.final_evaluation(rollout_eval, training.full_params(state), val,
                                            config, env, needs_pixels)
    evaluation.update(step=step, val_loss=last_val, best_val_loss=best, method=f.method)
    if primary:
      io.write_json(os.path.join(directory, train_lib.EVAL_FILE), evaluation)
    summary['evaluation'] = evaluation
  writer.close()
  ckpt.close()
  if primary:  # Last: the stage is done.
    io.mark_done(directory, [train_lib.EVAL_FILE] if val is not None else [], step=step,
                 method=f.method)
  summary['total_seconds'] = time.perf_counter() - t_start
  return summary


SUMMARY_KEYS = ('task', 'variant', 'method', 'steps', 'resumed_from', 'steps_per_second',
                'final_val_loss', 'best_val_loss', 'finetune_seconds', 'checkpoint_dir')


def main(argv, config_flag, workdir_flag, accept_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  summary = finetune(config_flag.value, workdir_flag.value,
                     accept_changed_settings=accept_flag.value)
  if distributed.is_primary():
    train_lib.print_summary(summary, SUMMARY_KEYS)


def run():
  """Entry point of `wmjax-finetune` and of `python experiments/finetune.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
