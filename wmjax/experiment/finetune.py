"""The finetuning stage: AWM or OWM on a trained world model (PAPER.md section 4).

Binary: `experiments/finetune.py` (`wmjax-finetune`). `finetune` reads the base model from
`<workdir>/world_model` (or `finetune.pretrained`), checks that it was trained on this task, model
config and dataset, and writes `<workdir>/finetune_<method>/` with the same checkpoints, metrics
and eval.json as training, so every tool that reads a world model reads it too. The methods are
training iterations of `wmjax.training.iterations` run by the shared step loop (`loop`):

- adversarial (AWM): every batch is trained on predictor inputs perturbed by one FGSM step with
  random start, against the clean targets; the radii live in the train state.
- online (OWM): every `finetune.online.every` steps, plans of the paper's Adam planner from
  dataset segments are executed in the simulator and the executed windows go into a replay
  buffer (part of the train state, so it is checkpointed); each batch mixes offline windows with
  buffer windows.

Killed and restarted in the same workdir, the run resumes from its latest checkpoint; every step's
data, dropout, attack and planning keys are functions of (seed, step) only.
"""

import contextlib
import copy
import os
import time
from typing import Any

import jax
import ml_collections

from wmjax import checks
from wmjax import data as data_lib
from wmjax import distributed
from wmjax import io
from wmjax import parallel
from wmjax import training
from wmjax.experiment import evaluation
from wmjax.experiment import layout
from wmjax.experiment import loop
from wmjax.experiment import planners as planners_lib
from wmjax.experiment import train as train_lib
from wmjax.training import checkpoint as checkpoint_lib
from wmjax.training import iterations

METHODS = ('adversarial', 'online')
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
STREAMS = iterations.Streams(data=11, dropout=12, online=13)


def finetune_settings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """FINETUNE_SETTINGS, plus the settings of OWM's planner where it is not the paper's Adam
  (which has its own in finetune.online)."""
  o = config.finetune.online
  other = config.finetune.method == 'online' and o.get('planner', 'adam') != 'adam'
  return FINETUNE_SETTINGS + ((f'plan.{o.planner}',) if other else ())


def out_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return layout.finetune_dir(workdir, config.finetune.method)


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
    if o.planner not in planners_lib.PLANNERS:
      errors.append(f'finetune.online.planner={o.planner!r}; choose one of '
                    f'{planners_lib.PLANNERS}')
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
    if o.rollout not in evaluation.ROLLOUT_MODES:
      errors.append(f'finetune.online.rollout={o.rollout!r}; choose one of '
                    f'{evaluation.ROLLOUT_MODES}')
    if checks.range_problem(o.online_fraction, 'online_fraction', low=0, high=1, low_open=True,
                            high_open=True) is None:
      num_offline, num_online = online_split(config)
      if num_offline < 1 or num_online < 1:
        errors.append(f'finetune.batch_size={f.batch_size} with online_fraction='
                      f'{o.online_fraction} leaves {num_offline} offline and {num_online} buffer '
                      'windows per batch; both must be >= 1')
  checks.raise_config_errors(errors, 'finetune config')


def finetune_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The optimiser settings of finetuning: config.train with the finetuning lrs and steps."""
  t = ml_collections.ConfigDict(copy.deepcopy(config.train.to_dict()))
  t.predictor_lr = float(config.finetune.predictor_lr)
  t.encoder_lr = float(config.finetune.encoder_lr)
  t.steps = int(config.finetune.steps)
  return t


def make_iteration(config, env, model, optimizer, stats, needs_pixels: bool,
                   mesh) -> iterations.Iteration:
  """The configured method's jitted `Iteration` (`wmjax.training.iterations`).

  Data parallel over `mesh` as in training: state and arrays replicated, each global batch
  sampled with the same keys as on one device and split across the devices before its pixels
  are rendered.
  """
  f = config.finetune
  windows = iterations.Windows(env, int(config.num_hist), int(config.frameskip),
                               int(config.image_size), needs_pixels, mesh)
  if f.method == 'adversarial':
    return iterations.adversarial_iteration(model, optimizer, windows, int(f.batch_size),
                                            STREAMS, adversarial_config(config))
  o = f.online
  num_offline, num_online = online_split(config)
  action_size = int(config.frameskip) * env.action_size
  if o.planner == 'adam':  # Section 4 (OWM): the paper's planner, with OWM's lr and steps.
    planner = training.owm_planner(int(o.planner_horizon), action_size, lr=float(o.lr),
                                   num_steps=int(o.num_steps))
  else:  # Not the paper's: another planner's data, with its `plan.<planner>` settings.
    planner = planners_lib.make_planner(o.planner, config.plan[o.planner],
                                        horizon=int(o.planner_horizon), action_size=action_size)
  return iterations.online_iteration(
      model, optimizer, windows, STREAMS, stats=stats, planner=planner, num_offline=num_offline,
      num_online=num_online, capacity=int(o.capacity), num_segments=int(o.num_segments),
      goal_horizon=int(o.goal_horizon), objective=o.objective, rollout=o.rollout,
      alpha=float(config.plan.alpha))


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
  with (io.workdir_lock(workdir, f'finetune ({config.finetune.method})',
                        enabled=distributed.is_primary()),
        contextlib.ExitStack() as closing):  # Closes the checkpointer and writer on any exit.
    return _finetune(config, workdir, progress, mesh, accept_changed_settings, closing)


def _finetune(config, workdir, progress, mesh, accept_changed_settings, closing):
  f = config.finetune
  mesh, env, ds, train, val, model_kwargs, model, meta = layout.model_inputs(
      config, workdir, f.batch_size, 'finetune.batch_size', mesh)
  primary = distributed.is_primary()
  progress = progress and primary
  say = print if primary else (lambda *a, **k: None)
  stats = data_lib.stats_from_meta(ds.meta)
  directory = out_dir(config, workdir)
  os.makedirs(directory, exist_ok=True)

  needs_pixels = model.obs_key == 'pixels'
  optimizer = training.make_optimizer(finetune_train_config(config))
  root = jax.random.key(int(config.seed))
  iteration = make_iteration(config, env, model, optimizer, stats, needs_pixels, mesh)
  obs = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  target_params = jax.eval_shape(lambda: model.init(jax.random.key(0), obs))

  def make_state(params):
    return training.create_train_state(params, optimizer,
                                       extra=iteration.init_extra(params, train, root))

  ckpt = closing.enter_context(training.Checkpointer(directory, keep=int(config.train.keep)))
  t_start = time.perf_counter()
  start = training.start_or_resume(ckpt, make_state, meta, config, target_args=(target_params,),
                                   settings=finetune_settings(config),
                                   accept_changed_settings=accept_changed_settings)
  resumed_from = start.step
  meta['run_id'] = start.run_id  # Tells this run's saves (best/ included) from another's.
  if primary:
    io.clear_done(directory)  # Written again last, when this run has finished.
  writer = (closing.enter_context(training.MetricWriter(directory)) if primary
            else loop.NullWriter())
  if resumed_from is not None:
    state, stored = start.state, start.meta
    base_info = stored.get('pretrained')
    say(f'Resuming {f.method} finetuning from step {resumed_from} in {ckpt.directory}.')
    if start.changed_settings:
      say('Continuing with changed settings:\n  ' + '\n  '.join(start.changed_settings))
    writer.truncate_after(resumed_from)
  else:
    writer.truncate_after(-1)  # Records of an earlier run without checkpoints.
    params, base_info = layout.load_pretrained(config, workdir, meta, target_params)
    state = make_state(params)
    say(f'Finetuning ({f.method}) the world model at {base_info["path"]} '
        f'({base_info["which"]}, step {base_info["step"]}).')
  meta.update(pretrained=base_info, finetune_method=f.method)

  if f.method == 'adversarial':  # OWM's batches mix in executed windows, rendered per step.
    train, note = training.maybe_add_tokens(model, training.full_params(state), train, env,
                                            int(config.image_size),
                                            float(config.token_cache_gb))
    say(f'{note[0].upper()}{note[1:]}.')
  eval_batch, rollout_eval = evaluation.eval_functions(model, mesh)
  state, train = parallel.replicate((state, train), mesh)
  validate = None if val is None else (lambda state: evaluation.validation_loss(
      eval_batch, state, val, config, env, needs_pixels))
  if resumed_from is None and validate is not None:
    # The base model's validation loss, recorded as step 0 for reference; `best/` only ever
    # holds finetuned states (AWM trades some clean error for robustness).
    writer.write(0, validate(state), split='val')
  out = loop.run(
      state, train, root, iteration,
      loop.Schedule(steps=int(f.steps), log_every=int(f.log_every),
                    eval_every=int(f.eval_every), checkpoint_every=int(f.checkpoint_every),
                    collect_every=int(f.online.every)),
      validate=validate, ckpt=ckpt, writer=writer, meta=meta, hint=NONFINITE_HINT,
      val_hint=train_lib.NONFINITE_HINT, desc=f'finetune ({f.method})', progress=progress)
  state, step, best, last_val = out.state, out.step, out.best_val_loss, out.last_val_loss

  summary = {
      'task': config.task, 'variant': config.variant, 'method': f.method, 'steps': step,
      'resumed_from': resumed_from, 'pretrained': base_info, 'finetune_seconds': out.seconds,
      'steps_per_second': (step - out.first_step) / max(out.seconds, 1e-9),
      'final_val_loss': last_val, 'best_val_loss': best, 'checkpoint_dir': ckpt.directory,
  }
  if val is not None:
    result = evaluation.final_evaluation(rollout_eval, training.full_params(state), val, config,
                                         env, needs_pixels)
    result.update(step=step, val_loss=last_val, best_val_loss=best, method=f.method)
    if primary:
      io.write_json(os.path.join(directory, layout.EVAL_FILE), result)
    summary['evaluation'] = result
  writer.close()
  ckpt.close()
  if primary:  # Last: the stage is done.
    io.mark_done(directory, [layout.EVAL_FILE] if val is not None else [], step=step,
                 method=f.method)
  summary['total_seconds'] = time.perf_counter() - t_start
  return summary


SUMMARY_KEYS = ('task', 'variant', 'method', 'steps', 'resumed_from', 'steps_per_second',
                'final_val_loss', 'best_val_loss', 'finetune_seconds', 'checkpoint_dir')

