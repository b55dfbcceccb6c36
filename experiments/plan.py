r"""Evaluates a planner on a task with a trained world model (PAPER.md section 3).

  python experiments/plan.py --config experiments/configs/wall.py:cpu --workdir runs/wall \
      --config.plan.planner=cem [--config.plan.mode=open_loop] [--checkpoint DIR]

Loads the world model (`--checkpoint`, default `<workdir>/world_model`) and the dataset's
normalisation statistics (`<workdir>/dataset`), builds the planner named by `plan.planner`
(experiments/planners.py), samples `plan.num_instances` evaluation problems with keys derived from
`plan.seed`, and runs every episode (MPC or open loop) in ONE jitted, batched call of
`wmjax.planning.mpc.evaluate`, sharded over the devices. Compilation is timed apart from the run.
With `plan.model=simulator` the true dynamics replace the world model's predictor: the ceiling a
perfect model could reach. `plan.simulator_cost=latent` (default) scores the simulated states with
the world model's own cost (its encoder on the rendered frames; the checkpoint is loaded for it);
`state` scores z-scored state vectors and needs no world model.

Writes `<workdir>/plan/<run_name>/`:
  results.json   per-instance success, distances, replans to success; timings, budget, seeds,
                 planner settings, machine, jax version and matmul precision;
  summary.md     success rate with its 95% Wilson interval, mean final distance, time, budget;
  distance.png   distance to the goal over executed model actions, one line per instance;
  videos/        planned (left) vs executed (right) GIFs of the first `plan.num_videos` instances;
  done.json      written last (wmjax/io.py): the stage finished, with the sha256 of its results.
Every file is written atomically, under the workdir lock. The printed summary and results.json
report `num_nonfinite` (costs or gradients the planner guarded) and the plans left without a
finite cost; a run where every plan is non-finite fails (wmjax.checks.NonFiniteError).
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

from experiments import cli
from experiments import planners as planners_lib
from experiments import runtime
from wmjax import checks
from wmjax import data as data_lib
from wmjax import distributed
from wmjax import envs
from wmjax import io
from wmjax import machine as machine_lib
from wmjax import parallel
from wmjax.envs import execution
from wmjax.envs import render as render_lib
from wmjax.planning import mpc
from wmjax.planning import objectives
from wmjax.planning import problems

OUT_DIR = 'plan'
RESULTS_FILE = 'results.json'
SUMMARY_FILE = 'summary.md'
DATASET_DIR = 'dataset'
WORLD_MODEL_DIR = 'world_model'
MODELS = ('world_model', 'simulator')
MODES = ('mpc', 'open_loop')
SIMULATOR_COSTS = ('latent', 'state')
CHECKPOINTS = ('best', 'latest')
# Simulator settings under which `jax.grad` goes through the task's solver (STACK.md: MJX
# needs one solver iteration); used for the cost of gradient planners with plan.model=simulator.
_DIFFERENTIABLE_SIMULATOR = {'pointmaze': dict(solver_iterations=1)}
# Sub-streams of plan.seed.
_PROBLEMS, _EPISODES = 0, 1
# Numeric plan settings and their valid ranges (checks.range_problem); every other number of the
# config must be finite.
PLAN_RANGES = {
    'plan.alpha': {'low': 0},
    'plan.objective_base': {'low': 0, 'low_open': True},
    **{f'plan.{name}.{field}': {'low': 0, 'low_open': True}
       for name, fields in (('gd', ('lr', 'init_std')),
                            ('adam', ('lr', 'open_loop_lr', 'init_std')),
                            ('cem', ('init_std',)),
                            ('mppi', ('init_std', 'temperature', 'min_std', 'max_std')),
                            ('gradcem', ('lr', 'init_std')))
       for field in fields},
    **{f'plan.{name}.noise_std': {'low': 0} for name in ('gd', 'adam', 'gradcem')},
}


def define_flags() -> tuple[Any, Any, Any]:
  """--config, --workdir, --checkpoint; defined only when run as a script."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Run directory (DIR/plan/<run_name> out).')
  checkpoint = flags.DEFINE_string(
      'checkpoint', None, 'World-model checkpoint directory (default: <workdir>/world_model).')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, checkpoint


# ------------------------------------------------------------------------------------ config
def protocol(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The run's derived protocol: objective, rollout, execute, replans, budget (checked)."""
  check_config(config)
  p = config.plan
  name = p.planner
  proto = planners_lib.protocol(name, p[name], objective=p.objective, rollout=p.rollout)
  open_loop = p.mode == 'open_loop'
  horizon = int(p.horizon)
  execute = horizon if open_loop else proto.execute
  num_replans = 1 if open_loop else int(p.budget) // execute
  return {
      'planner': name, 'model': p.model, 'mode': p.mode, 'open_loop': open_loop,
      'simulator_cost': p.simulator_cost if p.model == 'simulator' else None,
      'objective': proto.objective, 'rollout': proto.rollout, 'alpha': float(p.alpha),
      'objective_base': float(p.objective_base), 'bounded': bool(p.bounded),
      'horizon': horizon, 'execute': execute, 'num_replans': num_replans,
      'model_actions': num_replans * execute,
      'env_steps': num_replans * execute * int(config.frameskip),
      'settings': planners_lib.settings_summary(name, p[name], open_loop),
  }


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every invalid or contradictory `plan` setting."""
  p = config.plan
  errors = []
  if p.planner not in planners_lib.PLANNERS:
    raise ValueError(f'Unknown planner plan.planner={p.planner!r}; choose one of '
                     f'{planners_lib.PLANNERS}.')
  if p.model not in MODELS:
    errors.append(f'plan.model={p.model!r}; choose one of {MODELS}')
  if p.mode not in MODES:
    errors.append(f'plan.mode={p.mode!r}; choose one of {MODES}')
  if p.simulator_cost not in SIMULATOR_COSTS:
    errors.append(f'plan.simulator_cost={p.simulator_cost!r}; choose one of {SIMULATOR_COSTS}')
  if p.checkpoint not in CHECKPOINTS:
    errors.append(f'plan.checkpoint={p.checkpoint!r}; choose one of {CHECKPOINTS}')
  section = p[p.planner]
  objective = p.objective or section.get('objective')
  rollout = p.rollout or section.get('rollout')
  if objective not in objectives.MODES:
    errors.append(f'objective {objective!r} (plan.objective or plan.{p.planner}.objective); '
                  f'choose one of {objectives.MODES}')
  if rollout not in objectives.ROLLOUTS:
    errors.append(f'rollout {rollout!r} (plan.rollout or plan.{p.planner}.rollout); choose one '
                  f'of {objectives.ROLLOUTS}')
  horizon, execute = int(p.horizon), int(section.get('execute', 0))
  if horizon < 1:
    errors.append(f'plan.horizon must be >= 1; got {horizon}')
  elif p.mode == 'mpc':
    if not 1 <= execute <= horizon:
      errors.append(f'plan.{p.planner}.execute={execute} must be in [1, plan.horizon={horizon}] '
                    '(model actions executed per replan)')
    elif int(p.budget) < execute or int(p.budget) % execute:
      errors.append(f'plan.budget={p.budget} executed model actions must be a positive multiple '
                    f'of plan.{p.planner}.execute={execute} (replans = budget / execute)')
  if int(p.num_instances) < 1:
    errors.append(f'plan.num_instances must be >= 1; got {p.num_instances}')
  if not 0 <= int(p.num_videos) <= int(p.num_instances):
    errors.append(f'plan.num_videos must be in [0, plan.num_instances={p.num_instances}]; got '
                  f'{p.num_videos}')
  errors += checks.config_problems(config, PLAN_RANGES)
  if p.mppi.min_std > p.mppi.max_std:
    errors.append(f'plan.mppi.min_std={p.mppi.min_std} must be <= plan.mppi.max_std='
                  f'{p.mppi.max_std}')
  if errors:
    raise ValueError('Invalid plan config:\n  ' + '\n  '.join(errors))


def run_name(config: ml_collections.ConfigDict) -> str:
  p = config.plan
  if p.run_name:
    return p.run_name
  parts = [p.planner, p.mode]
  if p.bounded:
    parts.append('bounded')
  if p.model == 'simulator':
    parts.append('simulator' if p.simulator_cost == 'latent' else 'simulator_state')
  return '_'.join(parts)


# ------------------------------------------------------------------------------------ inputs
def load_model(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None, env):
  """(model, params, meta) of the checkpoint, checked against the task and action size."""
  from wmjax import training  # pylint: disable=g-import-not-at-top
  path = checkpoint or os.path.join(workdir, WORLD_MODEL_DIR)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'No world model at {path}. Train one first:\n  python experiments/train_world_model.py '
        f'--config experiments/configs/{config.task}.py:{config.variant} --workdir {workdir}\n'
        'or pass --checkpoint, or plan with --config.plan.model=simulator '
        '--config.plan.simulator_cost=state.')
  model, params, meta = training.load_world_model(path, which=config.plan.checkpoint)
  if meta.get('task') != config.task:
    raise ValueError(f'The world model at {path} was trained on task {meta.get("task")!r}; this '
                     f'config plans on {config.task!r}.')
  action_size = int(config.frameskip) * env.action_size
  if int(model.action_dim) != action_size:
    raise ValueError(f'The world model at {path} takes model actions of size {model.action_dim}; '
                     f'this config needs frameskip * A = {config.frameskip} * {env.action_size} = '
                     f'{action_size} (set config.frameskip to match the model).')
  return model, params, dict(meta, checkpoint_path=os.path.abspath(path))


def load_stats(config, workdir: str, env, meta: dict | None) -> tuple[data_lib.Stats, str]:
  """Normalisation statistics: the checkpoint meta's, else `<workdir>/dataset` (checked against
  the checkpoint's dataset fingerprint), else (simulator only) the env's nominal ones."""
  if meta is not None and 'stats' in meta:
    return data_lib.stats_from_meta(meta), 'checkpoint meta'
  path = os.path.join(workdir, DATASET_DIR)
  if os.path.isdir(path):
    ds_meta = data_lib.read_meta(path, task=config.task)
    want = None if meta is None else meta.get('dataset_fingerprint')
    got = ds_meta['arrays_sha256'][:16]
    if want is not None and want != got:
      raise ValueError(f'{path} is not the dataset the world model was trained on (fingerprint '
                       f'{got}, checkpoint expects {want}); its normalisation would not match.')
    return data_lib.stats_from_meta(ds_meta), path
  if meta is not None:
    raise FileNotFoundError(f'No dataset at {path}: planning needs the normalisation statistics '
                            'the world model was trained with.')
  return data_lib.nominal_stats(env), 'env nominal (no dataset)'


def sample_problems(env, num: int, seed: int):
  """(init (N, S), goal (N, S), episode keys (N,)): problem i from fold_in(key(seed), i)."""
  root = jax.random.key(seed)
  idx = jnp.arange(num)
  problem_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, _PROBLEMS), i))(idx)
  episode_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, _EPISODES), i))(idx)
  init, goal = jax.jit(jax.vmap(env.sample_problem))(problem_keys)
  return init, goal, episode_keys


def make_problem_fn(config, env, model, stats, proto):
  """params -> problems.Problem (built inside the jitted function, so params stay arguments)."""
  kw = dict(objective=proto['objective'], alpha=proto['alpha'], base=proto['objective_base'])
  if proto['model'] == 'simulator':
    cost_env = env
    if proto['planner'] in ('gd', 'adam', 'gradcem') and config.task in _DIFFERENTIABLE_SIMULATOR:
      cost_env = envs.load(config.task, clip_actions=config.clip_actions,
                         **_DIFFERENTIABLE_SIMULATOR[config.task])
    def simulator(params):
      latent_fn = None
      if proto['simulator_cost'] == 'latent':
        latent_fn = problems.rendered_latent_fn(env, model, params)
      return problems.simulator_problem(env, stats, frameskip=int(config.frameskip),
                                        cost_env=cost_env, latent_fn=latent_fn, **kw)
    return simulator
  return lambda params: problems.world_model_problem(
      env, model, params, stats, rollout=proto['rollout'], **kw)


def build_planner(config, env, stats, proto):
  p = config.plan
  low = high = None
  if proto['bounded']:
    low, high = execution.action_bounds(env, execution.normalizer_from_stats(stats),
                                        int(config.frameskip))
  return planners_lib.make_planner(
      p.planner, p[p.planner], horizon=proto['horizon'],
      action_size=int(config.frameskip) * env.action_size, action_low=low, action_high=high,
      open_loop=proto['open_loop'])


# ------------------------------------------------------------------------------------ outputs
def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a success rate."""
  if n == 0:
    return (0.0, 1.0)
  phat = successes / n
  denom = 1 + z * z / n
  center = (phat + z * z / (2 * n)) / denom
  half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, center - half), min(1.0, center + half))


def _label(frames: np.ndarray, text: str, scale: int) -> np.ndarray:
  """Upscales (T, H, W, 3) uint8 frames by `scale` and writes `text` in a header strip."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
  t, h, w, _ = frames.shape
  header = Image.new('RGB', (w, 14), (255, 255, 255))
  ImageDraw.Draw(header).text((2, 1), text, fill=(0, 0, 0))
  strip = np.broadcast_to(np.asarray(header)[None], (t, 14, w, 3))
  return np.concatenate([strip, frames], axis=1)


def write_videos(out_dir, config, env, model, params, stats, proto, init, goal, ep, count):
  """Planned-vs-executed GIFs; returns (paths, what the left panel shows)."""
  from wmjax import media  # pylint: disable=g-import-not-at-top
  size = int(model.image_size) if model is not None else int(config.image_size)
  fs = int(config.frameskip)
  normalizer = execution.normalizer_from_stats(stats)
  render = jax.jit(jax.vmap(lambda s: render_lib.to_uint8(env.render(s, size))))
  decoded = model is not None and getattr(model, 'encoder_name', '') == 'conv'
  if decoded:
    planned_label = 'world-model decoder: the first plan as the model imagined it'

    @jax.jit
    def planned(params, state_vector, actions):
      obs = problems.pixel_observer(env, normalizer, size)(state_vector)
      z = model.rollout(params, model.encode(params, obs), actions, mode=proto['rollout'])
      return render_lib.to_uint8(model.decode(params, z['visual']))
  else:
    planned_label = 'simulator: the first plan executed open loop'

    @jax.jit
    def planned(params, state_vector, actions):
      del params  # Unused.
      traj = execution.execute_plans(env, normalizer, state_vector[None], actions[None], fs)
      return render(traj['state'][0])

  scale = max(1, 128 // size)
  paths = []
  for i in range(count):
    left = np.asarray(planned(params, init[i], jnp.asarray(ep.plans[i, 0])))
    right = np.asarray(render(jnp.asarray(ep.states[i])))
    goal_img = np.asarray(render(jnp.asarray(goal[i])[None]))[0]
    right = np.concatenate([right, goal_img[None]], axis=0)  # Last frame: the goal.
    frames = media.side_by_side(_label(left, 'planned' + (' (decoder)' if decoded else
                                                          ' (simulator)'), scale),
                                _label(right, 'executed, then goal', scale))
    path = os.path.join(out_dir, 'videos', f'instance_{i:03d}.gif')
    with io.atomic_path(path) as tmp:
      media.save_video(tmp, frames, fps=4)
    paths.append(path)
  return paths, planned_label


def write_plot(path: str, distances: np.ndarray, success: np.ndarray, title: str) -> None:
  """Distance to the goal (N, T) over executed model actions, one line per instance."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  steps = np.arange(distances.shape[1])
  for d, s in zip(distances, success):
    ax.plot(steps, d, color='tab:green' if s else 'tab:red', alpha=0.5, lw=1)
  ax.plot(steps, distances.mean(axis=0), color='k', lw=2, label='mean')
  ax.set_xlabel('executed model actions')
  ax.set_ylabel('distance to goal')
  ax.set_title(title, fontsize=9)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def summary_markdown(r: dict[str, Any]) -> str:
  lo, hi = r['success_rate_ci95']
  b = r['budget']
  t = r['timing']
  return '\n'.join([
      f'# {r["task"]}: {r["protocol"]["settings"]}, {r["protocol"]["mode"]}, '
      f'model {r["protocol"]["model"]}',
      '',
      '| success | 95% CI (Wilson) | mean final distance | mean min distance | '
      's / episode (batched) | s / plan (batched) | compile s | budget |',
      '|---|---|---|---|---|---|---|---|',
      f'| {r["success_rate"]:.0%} ({r["num_success"]}/{r["num_instances"]}) | '
      f'{lo:.0%} - {hi:.0%} | {r["mean_final_distance"]:.4g} | {r["mean_min_distance"]:.4g} | '
      f'{t["seconds_per_episode"]:.3g} | {t["seconds_per_plan"]:.3g} | '
      f'{t["compile_seconds"]:.3g} | {b["num_replans"]} replans x {b["execute"]} executed = '
      f'{b["model_actions"]} model actions ({b["env_steps"]} env steps) |',
      '',
      f'Objective `{r["protocol"]["objective"]}` (alpha {r["protocol"]["alpha"]:g}), rollout '
      f'`{r["protocol"]["rollout"]}`, horizon {r["protocol"]["horizon"]}, '
      f'{"bounded" if r["protocol"]["bounded"] else "unbounded"} actions; '
      f'{r["num_instances"]} instances (seed {r["seed"]}), all episodes batched in one call on '
      f'{r["machine"]["device_count"]} x {r["machine"]["device_kind"]} '
      f'(jax {r["machine"]["jax"]}, matmul precision '
      f'{r["machine"]["jax_default_matmul_precision"]}).',
      '',
      f'Non-finite costs or gradients guarded by the planner: {r.get("num_nonfinite", 0)}; '
      f'plans without a finite cost: {r.get("num_nonfinite_plans", 0)}/'
      f'{r.get("num_plans", "?")}.',
      '',
  ])


# ------------------------------------------------------------------------------------ run
def evaluate(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None,
             progress: bool = True, mesh=None) -> dict[str, Any]:
  """Runs the evaluation the config describes; writes and returns the results dict.

  The instances are split across `mesh` (default: every device of every process). In a
  multi-process job every process runs this with the same arguments and gets the results;
  process 0 holds the workdir lock and writes them, each file atomically and `done.json` last.

  Raises:
    wmjax.checks.NonFiniteError: every plan had a non-finite cost (the results are written,
      without the done marker, for inspection).
  """
  protocol(config)  # Checks the config before anything else.
  with io.workdir_lock(workdir, f'plan ({run_name(config)})', enabled=distributed.is_primary()):
    return _evaluate(config, workdir, checkpoint, progress, mesh)


def _evaluate(config, workdir, checkpoint, progress, mesh):
  primary = distributed.is_primary()
  say = print if progress and primary else (lambda *a, **k: None)
  proto = protocol(config)
  p = config.plan
  n = int(p.num_instances)
  parallel.check_divisible(n, jax.device_count() if mesh is None else mesh, 'plan.num_instances')
  env = envs.load(config.task, clip_actions=config.clip_actions)
  model = params = meta = None
  if p.model == 'world_model' or p.simulator_cost == 'latent':
    say('Loading the world model' + (' (its encoder scores the simulated states)'
                                     if p.model == 'simulator' else '') + ' ...')
    model, params, meta = load_model(config, workdir, checkpoint, env)
    if meta.get('which_note'):
      say(f'Note: plan.checkpoint={p.checkpoint}: {meta["which_note"]}.')
  stats, stats_source = load_stats(config, workdir, env, meta)
  planner = build_planner(config, env, stats, proto)

  say(f'Sampling {n} {config.task} problems (seed {p.seed}) ...')
  init, goal, keys = sample_problems(env, n, int(p.seed))
  mesh = parallel.make_mesh() if mesh is None else mesh
  # Every process sampled the same problems; each device keeps its share of them.
  init_d, goal_d, keys_d = parallel.shard_batch((init, goal, keys), mesh, global_batch=True)
  params_d = parallel.replicate(params, mesh)

  problem_fn = make_problem_fn(config, env, model, stats, proto)

  evaluation = mpc.sharded_evaluation(
      env, planner, problem_fn, mesh=mesh, num_replans=proto['num_replans'],
      execute=proto['execute'], frameskip=int(config.frameskip))

  budget_text = (f'{proto["num_replans"]} replans x {proto["execute"]} executed = '
                 f'{proto["model_actions"]} model actions ({proto["env_steps"]} env steps)')
  say(f'Compiling {proto["settings"]}, {p.mode}, {n} instances, budget {budget_text} ...')
  t0 = time.perf_counter()
  compiled = evaluation.lower(params_d, init_d, goal_d, keys_d).compile()
  compile_s = time.perf_counter() - t0
  say(f'  compiled in {compile_s:.2f} s; running ...')
  t0 = time.perf_counter()
  ep = jax.block_until_ready(compiled(params_d, init_d, goal_d, keys_d))
  run_s = time.perf_counter() - t0
  say(f'  ran in {run_s:.2f} s')
  ep = parallel.gather(ep)
  init, goal = np.asarray(init), np.asarray(goal)

  distances = np.asarray(jax.jit(jax.vmap(jax.vmap(env.distance, (0, None))))(
      jnp.asarray(ep.states), jnp.asarray(goal)))  # (N, T)
  success = np.asarray(ep.success, bool)
  k = int(success.sum())
  plan_nonfinite = np.asarray(ep.plan_nonfinite)  # (N, R) guarded steps or samples per plan.
  bad_plans = ~np.isfinite(np.asarray(ep.plan_costs))  # (N, R) plans without a finite cost.
  out_dir = os.path.join(workdir, OUT_DIR, run_name(config))
  if primary:
    os.makedirs(out_dir, exist_ok=True)
    io.clear_done(out_dir)
  results = {
      'task': config.task, 'variant': config.variant, 'run_name': run_name(config),
      'protocol': proto,
      'planner_settings': p[p.planner].to_dict(),
      'budget': {k2: proto[k2] for k2 in ('num_replans', 'execute', 'model_actions', 'env_steps',
                                          'horizon')},
      'num_instances': n, 'seed': int(p.seed),
      'seeds': {'problem_key': f'fold_in(fold_in(key({p.seed}), {_PROBLEMS}), i)',
                'episode_key': f'fold_in(fold_in(key({p.seed}), {_EPISODES}), i)'},
      'success_rate': k / n, 'num_success': k, 'success_rate_ci95': wilson_interval(k, n),
      'mean_final_distance': float(np.mean(ep.final_distance)),
      'mean_min_distance': float(np.mean(ep.min_distance)),
      # Non-finite costs or gradients the planners guarded (skipped steps, samples ranked
      # last), and plans left without any finite cost.
      'num_nonfinite': int(plan_nonfinite.sum()),
      'num_nonfinite_plans': int(bad_plans.sum()), 'num_plans': int(bad_plans.size),
      'timing': {
          'compile_seconds': compile_s, 'run_seconds': run_s,
          'seconds_per_episode': run_s,  # All episodes run at once, batched.
          'seconds_per_plan': run_s / proto['num_replans'],
          'seconds_per_instance_amortised': run_s / n,
      },
      'instances': [{
          'index': i, 'success': bool(success[i]),
          'final_distance': float(ep.final_distance[i]),
          'min_distance': float(ep.min_distance[i]),
          'replans_to_success': int(ep.replans_to_success[i]) if success[i] else None,
          'success_step': int(ep.success_step[i]) if success[i] else None,
          'init_state': init[i].tolist(), 'goal_state': goal[i].tolist(),
          'first_plan_cost': float(ep.plan_costs[i, 0]),
          'num_nonfinite': int(plan_nonfinite[i].sum()),
          'num_nonfinite_plans': int(bad_plans[i].sum()),
      } for i in range(n)],
      'stats_source': stats_source,
      'checkpoint': None if meta is None else {
          'path': meta['checkpoint_path'], 'which': meta.get('which', p.checkpoint),
          'requested': p.checkpoint, 'which_note': meta.get('which_note'),
          'step': meta.get('step'), 'val_loss': meta.get('val_loss')},
      'machine': machine_lib.machine_info(),
  }

  if not primary:  # Process 0 writes the outputs.
    raise_if_all_nonfinite(results, out_dir, written=False)
    return dict(results, out_dir=out_dir)
  say('Writing videos and the distance plot ...')
  paths, planned_label = write_videos(out_dir, config, env,
                                      model if p.model == 'world_model' else None, params, stats,
                                      proto, init, goal, ep, int(p.num_videos))
  results['videos'] = {'paths': [os.path.relpath(q, out_dir) for q in paths],
                       'left': planned_label, 'right': 'executed states (env.render), then goal'}
  with io.atomic_path(os.path.join(out_dir, 'distance.png')) as tmp:
    write_plot(tmp, distances, success,
               f'{config.task}: {proto["settings"]}, {p.mode}; green success, red failure')
  results['plot'] = 'distance.png'
  io.write_json(os.path.join(out_dir, RESULTS_FILE), results)
  io.write_text(os.path.join(out_dir, SUMMARY_FILE), summary_markdown(results))
  lo, hi = results['success_rate_ci95']
  say(f'{config.task} {proto["settings"]} {p.mode}: success {k}/{n} = {k / n:.0%} '
      f'[95% CI {lo:.0%}-{hi:.0%}], mean final distance {results["mean_final_distance"]:.4g}, '
      f'{run_s:.3g} s per batched episode, budget {budget_text}, non-finite: '
      f'{results["num_nonfinite"]} guarded, {results["num_nonfinite_plans"]}/'
      f'{results["num_plans"]} plans')
  raise_if_all_nonfinite(results, out_dir, written=True)
  io.mark_done(out_dir, [RESULTS_FILE, SUMMARY_FILE], num_success=k, num_instances=n)
  say(f'Results in {out_dir}')
  results['out_dir'] = out_dir
  return results


def raise_if_all_nonfinite(results: dict[str, Any], out_dir: str, written: bool) -> None:
  """Raises NonFiniteError when no plan of the run had a finite cost (its success rate would
  measure nothing but the initial actions)."""
  if results['num_plans'] and results['num_nonfinite_plans'] == results['num_plans']:
    raise checks.NonFiniteError(
        f'Every one of the {results["num_plans"]} plans had a non-finite cost '
        f'({results["num_nonfinite"]} non-finite costs or gradients guarded): the world model or '
        'the planner settings produce NaN or infinities, and the success rate measures nothing.'
        + (f' The results are in {out_dir} for inspection, not marked done.' if written else ''))


def main(argv, config_flag, workdir_flag, checkpoint_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  evaluate(config_flag.value, workdir_flag.value, checkpoint_flag.value)


def run():
  """Entry point of `wmjax-plan` and of `python experiments/plan.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
