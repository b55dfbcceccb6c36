r"""Wall-clock cost of each planner on one world model: per plan and per MPC episode.

For every planner at the paper's budgets (PAPER.md section 3: GD lr 1 x 1000, Adam x 100,
CEM 300 x 30, MPPI 512 x 6 (TD-MPC2), GradCEM 300 x 30 with one Adam step), and for 1 and 50
batched instances: the time of one plan (`jit(vmap(plan))` from encoded start and goal) and of one
MPC episode (`mpc.evaluate` with the task's budget of executed model actions; replans = budget /
actions executed per replan), compile time apart (`.lower().compile()`), best of --repeats runs.
All numbers come from ONE run on ONE model, so their ratios are meaningful; the paper's claim is
that an Adam-GBP episode costs at most 10% of a CEM episode.

  python benchmarks/planning.py                               # random cpu-sized wall model
  python benchmarks/planning.py --checkpoint runs/wall        # a trained model
  python benchmarks/planning.py --scale 0.1 --cem_iterations 10   # shrunken budgets (CPU)
  python benchmarks/planning.py --quick                       # seconds: tiny sizes (tests, CI)
  python benchmarks/planning.py --checkpoint runs/pusht/world_model --task pusht \
      --models world_model,simulator --planners cem --batch_sizes 10   # the ceiling's cost

Without --checkpoint the world model is randomly initialised with the `model` section of the
task's --variant config (default cpu); timings do not depend on the weights.

`--models` chooses what the planners plan through, each timed in the same run: `world_model`
(the learned predictor) and `simulator` (the true dynamics, each plan scored by the world
model's latent of its rendered final frame: the cost of the ceiling rows of
`experiments/plan.py --config.plan.model=simulator --config.plan.simulator_cost=latent`).
"""

import itertools
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import common as common_config
from wmjax import envs
from wmjax import machine as machine_lib
from wmjax.experiment import plan as plan_lib
from wmjax.experiment import planners as planners_lib
from wmjax.experiment import protocol as protocol_lib
from wmjax.experiment import runtime
from wmjax.planning import mpc
from wmjax.planning import problems

_TASK = flags.DEFINE_string('task', 'wall', 'Task whose world model and problems are used.')
_VARIANT = flags.DEFINE_enum('variant', 'cpu', common_config.VARIANTS,
                             'Config variant whose model sizes the random world model uses.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'World-model checkpoint (default: a random model).')
_PLANNERS = flags.DEFINE_list('planners', list(planners_lib.PLANNERS), 'Planners to time.')
_MODELS = flags.DEFINE_list(
    'models', ['world_model'], 'What the planners plan through, each timed in the same run: '
    'world_model | simulator (true dynamics scored by the model\'s latent cost: the ceiling).')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '50'], 'Batched instances.')
_SCALE = flags.DEFINE_float(
    'scale', 1.0, 'Multiplies every planner\'s work per plan (gradient steps; sampling '
    'populations and elites; iterations kept): shrinks budgets and keeps their ratios.')
_CEM_ITERATIONS = flags.DEFINE_integer(
    'cem_iterations', 30, 'CEM and GradCEM iterations (paper: 30 PushT, 10 PointMaze/Wall).')
_BUDGET = flags.DEFINE_integer(
    'budget', 30, 'Executed model actions per MPC episode (0: skip episodes).')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed runs (the best is reported).')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Seconds: the test-variant model, Adam and CEM (unless --planners is given), '
    '2 instances, tiny budgets.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    'Persistent XLA compilation cache (compile times then include cache hits).')

HORIZON = 5


def scaled_settings(name: str, scale: float, cem_iterations: int) -> dict[str, Any]:
  """The paper's settings of `name` (experiments/configs/common.py, paper variant), scaled."""
  s = common_config.plan_config('paper')[name].to_dict()
  if name in planners_lib.GRADIENT:
    s['num_steps'] = max(1, round(s['num_steps'] * scale))
  else:
    s['num_samples'] = max(4, round(s['num_samples'] * scale))
    s['num_elites'] = min(s['num_samples'], max(2, round(s['num_elites'] * scale)))
    if name in ('cem', 'gradcem'):
      s['num_iterations'] = cem_iterations
  return s


def load_model(task: str, variant: str, checkpoint: str | None, env):
  """(model, params, description): a checkpoint, or a random model of the variant's sizes."""
  from wmjax import training  # pylint: disable=g-import-not-at-top
  if checkpoint:
    model, params, meta = training.load_world_model(checkpoint)
    if meta.get('task') != task:
      raise ValueError(f'{checkpoint} holds a {meta.get("task")!r} model; --task is {task!r}.')
    return model, params, f'checkpoint {checkpoint} (step {meta.get("step")})'
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'experiments.configs.{task}').get_config(variant)
  model = training.build_world_model(training.world_model_kwargs(config, env))
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = model.init(jax.random.key(0), obs)
  n = sum(np.size(x) for x in jax.tree.leaves(params))
  s = model.latent_spec
  return model, params, (f'random {variant}-config {task} model ({model.encoder_name} encoder, '
                         f'{s.num_tokens} tokens x {s.token_dim}, {n / 1e6:.2f}M parameters)')


def nominal_stats(env):
  from wmjax import data  # pylint: disable=g-import-not-at-top
  return data.Stats(env.action_mean, env.action_std, jnp.zeros(env.proprio_size),
                    jnp.ones(env.proprio_size), jnp.zeros(env.state_size),
                    jnp.ones(env.state_size))


def _timed(fn, args, repeats: int) -> tuple[float, float]:
  """(compile seconds, best run seconds) of jit(fn)(*args)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  return compile_s, best


def problem_fn(task, env, model, stats, name, proto, through: str, frameskip: int):
  """params -> problems.Problem planning through the world model or, as `experiments/plan.py`
  does with `plan.model=simulator`, through the simulator with the model's latent cost."""
  if through == 'world_model':
    return lambda params: problems.world_model_problem(
        env, model, params, stats, objective=proto.objective, rollout=proto.rollout)
  if through != 'simulator':
    raise ValueError(f'Unknown model {through!r}; choose one of {protocol_lib.MODELS}.')
  return plan_lib.simulator_problem_fn(task, env, model, stats, name, frameskip=frameskip,
                                       objective=proto.objective)


def bench_planner(name, settings, task, env, model, params, stats, batch, budget, repeats,
                  through='world_model', frameskip=5) -> dict[str, Any]:
  """Times one plan and one MPC episode of `batch` instances through `through`."""
  proto = planners_lib.protocol(name, settings)
  planner = planners_lib.make_planner(name, settings, horizon=HORIZON,
                                      action_size=int(model.action_dim))
  keys = jax.random.split(jax.random.key(1), batch)
  init, goal = jax.jit(jax.vmap(env.sample_problem))(keys)
  problem = problem_fn(task, env, model, stats, name, proto, through, frameskip)

  def plan_batch(params, init, goal, keys):
    pr = problem(params)

    def one(i, g, k):
      cost = pr.make_cost(pr.observe(i), pr.observe(g))
      k_init, k_plan = jax.random.split(k)
      actions, _, info = planner.plan(cost, planner.init(k_init), k_plan)
      return actions, info['cost']

    return jax.vmap(one)(init, goal, keys)

  out = {'planner': name, 'model': through, 'batch': batch, 'settings': planners_lib.settings_summary(name, settings),
         'execute': proto.execute}
  out['plan_compile_s'], out['plan_s'] = _timed(plan_batch, (params, init, goal, keys), repeats)
  if budget:
    replans = max(1, budget // proto.execute)

    def episode(params, init, goal, keys):
      pr = problem(params)
      return mpc.evaluate(env, planner, pr.observe, pr.make_cost, pr.normalizer, init, goal,
                          keys, num_replans=replans, execute=proto.execute, frameskip=frameskip)

    out['replans'] = replans
    out['episode_compile_s'], out['episode_s'] = _timed(
        episode, (params, init, goal, keys), repeats)
  return out


def _fmt(x: float | None) -> str:
  return '-' if x is None else f'{x:.3g}'


def table(rows: list[dict[str, Any]]) -> str:
  lines = ['| planner | through | budget per plan | instances | s / plan | plan compile s | '
           'replans x executed | s / episode | episode compile s |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["planner"]} | {r["model"]} | {r["settings"]} | {r["batch"]} | '
        f'{_fmt(r["plan_s"])} | '
        f'{_fmt(r["plan_compile_s"])} | '
        + (f'{r["replans"]} x {r["execute"]}' if 'replans' in r else '-')
        + f' | {_fmt(r.get("episode_s"))} | {_fmt(r.get("episode_compile_s"))} |')
  return '\n'.join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
  """GD/CEM and Adam/CEM time ratios per batch size through the world model, per plan and per
  episode; and each planner's simulator / world-model ratio."""
  by = {(r['planner'], r['model'], r['batch']): r for r in rows}
  out = []
  for batch in sorted({r['batch'] for r in rows}):
    cem = by.get(('cem', 'world_model', batch))
    for name in ('gd', 'adam'):
      r = by.get((name, 'world_model', batch))
      if r is None or cem is None:
        continue
      text = f'{name}/cem, {batch} instances: per plan {r["plan_s"] / cem["plan_s"]:.3g}'
      if 'episode_s' in r and 'episode_s' in cem:
        text += f', per episode {r["episode_s"] / cem["episode_s"]:.3g}'
        if name == 'adam':
          claim = 'holds' if r['episode_s'] <= 0.1 * cem['episode_s'] else 'does not hold'
          text += f' (paper: Adam episode <= 0.1 x CEM: {claim} here)'
      out.append(text)
    for name in sorted({r['planner'] for r in rows}):
      sim, wm = by.get((name, 'simulator', batch)), by.get((name, 'world_model', batch))
      if sim is None or wm is None:
        continue
      text = (f'{name} simulator/world_model, {batch} instances: per plan '
              f'{sim["plan_s"] / wm["plan_s"]:.3g}')
      if 'episode_s' in sim and 'episode_s' in wm:
        text += f', per episode {sim["episode_s"] / wm["episode_s"]:.3g}'
      out.append(text)
  return out


def run(task: str, variant: str, checkpoint: str | None, names: list[str], batch_sizes: list[int],
        scale: float, cem_iterations: int, budget: int, repeats: int,
        models: tuple[str, ...] = ('world_model',)) -> list[dict[str, Any]]:
  for name in names:
    planners_lib.check_name(name)
  for through in models:
    if through not in protocol_lib.MODELS:
      raise ValueError(f'Unknown model {through!r} in --models; choose from {protocol_lib.MODELS}.')
  env = envs.load(task)
  model, params, description = load_model(task, variant, checkpoint, env)
  stats = nominal_stats(env)
  for line in machine_lib.describe():
    print(line)
  print(f'world model: {description}')
  print(f'budgets: the paper\'s x {scale:g} (CEM/GradCEM {cem_iterations} iterations); '
        f'episode budget {budget} executed model actions; best of {repeats} runs')
  rows = []
  for batch in batch_sizes:
    for through, name in itertools.product(models, names):
      settings = scaled_settings(name, scale, cem_iterations)
      r = bench_planner(name, settings, task, env, model, params, stats, batch, budget, repeats,
                        through=through)
      print(f'  {r["settings"]:<36} {through:<11} B={batch:<3} plan {r["plan_s"]:.4g} s '
            f'(compile {r["plan_compile_s"]:.3g} s)'
            + (f', episode {r["episode_s"]:.4g} s (compile {r["episode_compile_s"]:.3g} s)'
               if 'episode_s' in r else ''), flush=True)
      rows.append(r)
  print()
  print(table(rows))
  print()
  for line in ratios(rows):
    print(line)
  return rows


def main(argv):
  runtime.start(argv, cache=bool(_CACHE_DIR.value), cache_dir=_CACHE_DIR.value)
  if _QUICK.value:
    names = _PLANNERS.value if flags.FLAGS['planners'].present else ['adam', 'cem']
    run(_TASK.value, 'test', _CHECKPOINT.value, names, [2], scale=0.02, cem_iterations=2,
        budget=5, repeats=1, models=tuple(_MODELS.value))
  else:
    run(_TASK.value, _VARIANT.value, _CHECKPOINT.value, _PLANNERS.value,
        [int(b) for b in _BATCH_SIZES.value], _SCALE.value, _CEM_ITERATIONS.value, _BUDGET.value,
        _REPEATS.value, tuple(_MODELS.value))


if __name__ == '__main__':
  app.run(main)
