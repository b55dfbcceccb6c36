"""The gap diagnostic stage (PAPER.md sections 1 and 6): a world model's prediction error on
held-out offline trajectories beside its error on trajectories its planner induces.

Binary: `experiments/diagnose_gap.py` (`wmjax-diagnose-gap`).

For the base model (`<workdir>/world_model`) and every finetuned one found
(`<workdir>/finetune_adversarial`, `<workdir>/finetune_online`):
- offline: open-loop latent error up to `plan.horizon` steps on held-out dataset windows;
- own plans: one plan per evaluation problem (the configured planner, open loop, from the same
  problems and seeds as the planning stage) made with this model, executed in the simulator from
  the true start; the model then predicts the executed frames from the start frame and the plan;
- own plans, executed actions: the same trajectories, with the model fed the actions the
  simulator executed instead of the planned ones. Only tasks that clip differ from 'own
  plans': PointMaze (its reference clips forces to [-1, 1]) and Wall / PushT run with
  `clip_actions=True`; Wall and PushT execute plans unclipped, as their references do, so
  there the two rows agree and 'actions out of range' tells how far plans left the data;
- base plans: the same, on the trajectories the base model's plans induced (one fixed set of
  trajectories for every model).
Errors are latent MSEs over visual + proprio channels (the training loss) for the one-frame
('markov') rollout GBP plans with and the 'history' rollout; "no change" predicts z_k = z_0.
Writes `<workdir>/diagnose/gap.json` and `gap.md`.
"""

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from wmjax import data as data_lib
from wmjax import envs
from wmjax import io
from wmjax import machine as machine_lib
from wmjax.envs import execution
from wmjax.experiment import evaluation
from wmjax.experiment import finetune as finetune_lib
from wmjax.experiment import layout
from wmjax.experiment import plan as plan_lib
from wmjax.experiment import protocol as protocol_lib
from wmjax.planning import problems


def find_models(workdir: str) -> list[tuple[str, str]]:
  """[(name, checkpoint dir)]: 'base' first, then each finetuned model present."""
  base = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  if not os.path.isdir(base):
    raise io.MissingInputError(f'No base world model at {base}; train one first with '
                               'experiments/train_world_model.py.')
  found = [('base', base)]
  for method in finetune_lib.METHODS:
    path = layout.finetune_dir(workdir, method)
    if os.path.isdir(path):
      found.append((method, path))
  return found


def _errors(rollout_eval, params, batch) -> dict[str, Any]:
  return evaluation.mean_errors(rollout_eval, params, [batch])[0]


def diagnose(config: ml_collections.ConfigDict, workdir: str,
             progress: bool = True) -> dict[str, Any]:
  """Measures every model's errors; writes (atomically, `done.json` last, under the workdir
  lock) and returns the results dict."""
  with io.workdir_lock(workdir, 'diagnose_gap'):
    return _diagnose(config, workdir, progress)


def _diagnose(config, workdir, progress):
  say = print if progress else (lambda *a, **k: None)
  t_start = time.perf_counter()
  with config.unlocked():
    config.plan.mode = 'open_loop'  # One plan of `horizon` actions per problem, executed blind.
  proto = protocol_lib.protocol(config)
  env = envs.load(config.task, clip_actions=config.clip_actions)
  ds, _, val = layout.load_data(config, workdir, env)
  if val is None:
    raise ValueError('The diagnostic needs held-out trajectories: set data.val_fraction > 0.')
  stats = data_lib.stats_from_meta(ds.meta)
  normalizer = execution.normalizer_from_stats(stats)
  fs, horizon, size = int(config.frameskip), int(proto.horizon), int(config.image_size)
  n = int(config.plan.num_instances)
  init, goal, keys = plan_lib.task_problems(config.task, bool(config.clip_actions), n,
                                             int(config.plan.seed))
  planner = plan_lib.build_planner(config, env, stats, proto)
  models = find_models(workdir)
  # Offline windows are cut from held-out trajectories, which may be shorter than a plan.
  offline_horizon = min(horizon, int(val.actions.shape[1]) // fs)

  def make_plans(model, params):
    problem = problems.world_model_problem(env, model, params, stats, objective=proto.objective,
                                           alpha=proto.alpha, base=proto.objective_base,
                                           rollout=proto.rollout)

    def one(i, g, k):
      k_init, k_plan = jax.random.split(k)
      cost = problem.make_cost(problem.observe(i), problem.observe(g))
      actions, _, _ = planner.plan(cost, planner.init(k_init), k_plan)
      return actions

    return jax.vmap(one)(init, goal, keys)

  @jax.jit
  def induced_batch_fn(plans):
    traj = execution.execute_plans(env, normalizer, init, plans, fs)
    batch = {'state': traj['state'], 'proprio': traj['proprio'], 'actions': plans}
    return data_lib.add_pixels(env, batch, size)

  results = {'task': config.task, 'variant': config.variant, 'horizon': horizon,
             'offline_horizon': offline_horizon,
             'num_problems': n, 'planner': proto.settings, 'objective': proto.objective,
             'clip_actions': bool(env.clip_actions),
             'rollout_planned_with': proto.rollout, 'models': {}}
  base_batch = None
  # The base and finetuned models share one architecture (WorldModel is a frozen, hashable
  # dataclass): their programs are traced and compiled once, the parameters being arguments.
  programs = {}
  for name, path in models:
    say(f'[{name}] {path}')
    model, params, meta = layout.load_model(config, workdir, path, env)
    needs_pixels = model.obs_key == 'pixels'
    if model not in programs:
      programs[model] = (evaluation.rollout_function(model),
                         jax.jit(lambda p, model=model: make_plans(model, p)))
    rollout_eval, plans_fn = programs[model]
    offline, _ = evaluation.mean_errors(rollout_eval, params, data_lib.iterate_windows(
        val, int(config.train.batch_size), offline_horizon, fs,
        max_windows=int(config.train.eval_windows),
        **evaluation.render_args(config, env, needs_pixels)))
    plans = plans_fn(params)
    own_batch = induced_batch_fn(plans)
    # The same trajectories, with the actions the simulator executed (clipped where the task
    # clips): separates unseen actions from unseen states (PAPER.md section 9).
    executed = execution.executed_actions(env, normalizer, plans, fs)
    executed_batch = dict(own_batch, actions=executed)
    if base_batch is None:
      base_batch = own_batch
    entry = {
        'checkpoint': {'path': meta['checkpoint_path'], 'step': meta.get('step')},
        'offline': offline,
        'own_plans': _errors(rollout_eval, params, own_batch),
        'own_plans_executed': _errors(rollout_eval, params, executed_batch),
        'base_plans': _errors(rollout_eval, params, base_batch),
        'own_plans_goal_distance': float(np.mean(jax.device_get(jax.vmap(env.distance)(
            own_batch['state'][:, -1], goal)))),
        'own_plans_out_of_range': out_of_range(env, normalizer, plans, fs),
    }
    results['models'][name] = entry
    say(format_row(name, entry, offline_horizon))
  results['seconds'] = time.perf_counter() - t_start
  results['machine'] = machine_lib.machine_info()
  out = os.path.join(workdir, layout.DIAGNOSE_DIR)
  os.makedirs(out, exist_ok=True)
  io.clear_done(out)
  io.write_json(os.path.join(out, layout.GAP_FILE), results)
  io.write_text(os.path.join(out, layout.GAP_TABLE_FILE), markdown(results))
  io.mark_done(out, [layout.GAP_FILE, layout.GAP_TABLE_FILE])
  results['out_dir'] = out
  return results


def out_of_range(env, normalizer, plans, frameskip: int) -> float:
  """Fraction of the planned raw actions outside the behaviour data's range [action_low,
  action_high] (PAPER.md section 9: unbounded Adam plans leave the range the model was trained
  on; tasks that clip execute them clipped, Wall and PushT as planned)."""
  raw = np.asarray(jax.vmap(lambda a: normalizer.raw_actions(a, frameskip))(plans))
  low, high = np.asarray(env.action_low), np.asarray(env.action_high)
  return float(np.mean((raw < low - 1e-6) | (raw > high + 1e-6)))


def _loss(errors: dict[str, Any], mode: str, k: int, which: str = 'model') -> float:
  return float(errors[mode][which]['loss'][k - 1])


def format_row(name: str, entry: dict[str, Any], k_max: int) -> str:
  parts = [f'{name:<12}']
  for what in ('offline', 'own_plans', 'base_plans'):
    for k in (1, k_max):
      parts.append(f'{what} k={k}: {_loss(entry[what], "markov", k):.4g}')
  return '  '.join(parts)


def markdown(r: dict[str, Any]) -> str:
  """The results as a markdown table (k = 1 and the longest offline horizon)."""
  h = r['offline_horizon']
  head = ['model']
  for what in ('offline', 'own plans', 'own plans, executed actions', 'base plans'):
    head += [f'{what} k=1', f'{what} k={h}']
  head += ['own / offline (k=1)', 'own plans: actions out of range']
  lines = [
      f'# Prediction error on offline vs planner-induced trajectories: {r["task"]} '
      f'({r["variant"]})', '',
      f'{r["num_problems"]} evaluation problems; one open-loop plan each ({r["planner"]}, '
      f'objective {r["objective"]}, {r["rollout_planned_with"]} rollout), executed in the '
      'simulator. Latent MSE over visual + proprio channels of the one-frame (markov) rollout, '
      'k steps ahead; in brackets the "predict no change" baseline. "Executed actions" feeds '
      'the model the actions the simulator executed: clipped where the task clips '
      f'({"here: clipped" if r.get("clip_actions") else "here: as planned, so it equals own plans"}).',
      '',
      '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, e in r['models'].items():
    cells = []
    for what in ('offline', 'own_plans', 'own_plans_executed', 'base_plans'):
      for k in (1, h):
        cells.append(f'{_loss(e[what], "markov", k):.3g} '
                     f'({_loss(e[what], "markov", k, "no_change"):.3g})')
    ratio = _loss(e['own_plans'], 'markov', 1) / max(_loss(e['offline'], 'markov', 1), 1e-30)
    cells += [f'{ratio:.3g}', f'{e["own_plans_out_of_range"]:.0%}']
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'Run time {r["seconds"]:.0f} s.', '']
  return '\n'.join(lines)

