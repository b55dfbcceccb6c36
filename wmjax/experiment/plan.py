"""The planning stage: a planner evaluated on a task through a world model (PAPER.md section 3).

Binary: `experiments/plan.py` (`wmjax-plan`). `evaluate` loads the world model
(`layout.load_model`) and the dataset's normalisation statistics, builds the planner named by
`plan.planner` (`planners`), samples `plan.num_instances` evaluation problems with keys derived
from `plan.seed`, and runs every episode (MPC or open loop) in ONE jitted, batched call sharded
over the devices (`wmjax.planning.mpc.sharded_evaluation`), compilation timed apart from the run.
With `plan.model=simulator` the true dynamics replace the predictor (the ceiling a perfect model
could reach; `wmjax.planning.problems`). The run's protocol (objective, rollout, budget) is a
`protocol.PlanProtocol`; its outputs (results.json, summary.md, the distance plot, the videos) are written
by `plan_report` into `<workdir>/plan/<run_name>/`, `done.json` last.
"""

import collections
import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wmjax import checks
from wmjax import distributed
from wmjax import envs
from wmjax import io
from wmjax import machine as machine_lib
from wmjax import parallel
from wmjax.envs import execution
from wmjax.experiment import layout
from wmjax.experiment import plan_report
from wmjax.experiment import planners as planners_lib
from wmjax.experiment import protocol as protocol_lib
from wmjax.planning import mpc
from wmjax.planning import problems
from wmjax.training import integrity

# Simulator settings under which `jax.grad` goes through the task's solver (STACK.md: MJX
# needs one solver iteration); used for the cost of gradient planners with plan.model=simulator.
_DIFFERENTIABLE_SIMULATOR = {'pointmaze': dict(solver_iterations=1)}
# Sub-streams of plan.seed.
_PROBLEMS, _EPISODES = 0, 1
# Compiled evaluation programs of this process (`_program`) and realized-cost functions
# (`realized_first_plan_costs`), most recently used last.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 8


# ------------------------------------------------------------------------------------ inputs
def sample_problems(env, num: int, seed: int, indices: tuple[int, ...] | None = None):
  """(init (N, S), goal (N, S), episode keys (N,)): problem i from fold_in(key(seed), i), for
  i in `indices` (default 0 .. num-1; N = len(indices))."""
  root = jax.random.key(seed)
  idx = jnp.arange(num) if indices is None else jnp.asarray(indices, jnp.int32)
  problem_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, _PROBLEMS), i))(idx)
  episode_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, _EPISODES), i))(idx)
  init, goal = jax.jit(jax.vmap(env.sample_problem))(problem_keys)
  return init, goal, episode_keys


@functools.lru_cache(maxsize=8)
def task_problems(task: str, clip_actions: bool, num: int, seed: int,
                  indices: tuple[int, ...] | None = None):
  """`sample_problems(envs.load(task, clip_actions=clip_actions), num, seed, indices)`, sampled
  once per process for each argument tuple: a reproduction's rows and its gap diagnostic
  evaluate the same problems, and PushT's sampler (up to 75 expert steps per problem) takes
  seconds to trace and run each time. The arrays are never donated, so sharing them is safe.
  Pass `indices` only for a subset: the cache keys a call by its arguments as written, so
  `(..., seed)` and `(..., seed, None)` would sample the same problems twice."""
  return sample_problems(envs.load(task, clip_actions=clip_actions), num, seed, indices)


def simulator_problem_fn(task, env, model, stats, planner: str, *, frameskip: int,
                         clip_actions=None, simulator_cost: str = 'latent', **objective_kw):
  """params -> problems.Problem planning through the true dynamics (`plan.model=simulator`):
  scored by the model's latent of the rendered frames (`simulator_cost` 'latent'), the
  z-scored state ('state') or the task's own distance to the goal ('distance'); for gradient
  planners the cost simulates with settings `jax.grad` goes through
  (`_DIFFERENTIABLE_SIMULATOR`). `objective_kw`: `simulator_problem`'s objective,
  alpha, base."""
  cost_env = env
  if planner in planners_lib.GRADIENT + ('gradcem',) and task in _DIFFERENTIABLE_SIMULATOR:
    cost_env = envs.load(task, clip_actions=clip_actions, **_DIFFERENTIABLE_SIMULATOR[task])

  def simulator(params):
    latent_fn = None
    if simulator_cost == 'latent':
      latent_fn = problems.rendered_latent_fn(env, model, params)
    return problems.simulator_problem(env, stats, frameskip=frameskip, cost_env=cost_env,
                                      latent_fn=latent_fn,
                                      task_distance=simulator_cost == 'distance', **objective_kw)

  return simulator


def make_problem_fn(config, env, model, stats, proto):
  """params -> problems.Problem (built inside the jitted function, so params stay arguments)."""
  kw = dict(objective=proto.objective, alpha=proto.alpha, base=proto.objective_base)
  if proto.model == 'simulator':
    return simulator_problem_fn(config.task, env, model, stats, proto.planner,
                                frameskip=int(config.frameskip), clip_actions=config.clip_actions,
                                simulator_cost=proto.simulator_cost, **kw)
  return lambda params: problems.world_model_problem(
      env, model, params, stats, rollout=proto.rollout, **kw)


def realized_first_plan_costs(config, env, model, params, stats, proto, init: np.ndarray,
                              goal: np.ndarray, plans: np.ndarray) -> np.ndarray:
  """(N,) the cost of each instance's first plan as the simulator realizes it.

  The plan a planner chose from the true start is executed in `env` and scored with the same
  objective, alpha and base and the world model's encoder on the rendered frames: the cost the
  planner predicted for it through the model, measured in reality (the ceiling's cost). A
  realized cost far above the predicted one is a plan that exploits the model's errors.

  init, goal: (N, S) state vectors; plans: (N, H, frameskip * A) normalised first plans.
  """
  key = ('realized', config.task, repr(config.clip_actions), int(config.frameskip),
         proto.objective, proto.alpha, proto.objective_base, model, _stats_digest(stats))
  if key not in _PROGRAMS:  # Parameters are an argument: the base, AWM and OWM rows share it.

    def costs(params, init, goal, plans):
      problem = problems.simulator_problem(
          env, stats, frameskip=int(config.frameskip), objective=proto.objective,
          alpha=proto.alpha, base=proto.objective_base,
          latent_fn=problems.rendered_latent_fn(env, model, params))
      one = lambda s0, g, a: problem.make_cost(problem.observe(s0), problem.observe(g))(a)
      return jax.vmap(one)(init, goal, plans)

    _PROGRAMS[key] = jax.jit(costs)
  _PROGRAMS.move_to_end(key)
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return np.asarray(_PROGRAMS[key](params, jnp.asarray(init), jnp.asarray(goal),
                                   jnp.asarray(plans)))


def _stats_digest(stats) -> tuple[str, ...]:
  return tuple(integrity.leaf_digest(x)['sha256'] for x in jax.tree.leaves(stats))


def _program(config, env, model, stats, proto, planner, mesh, args) -> tuple[Any, bool]:
  """(the compiled evaluation program for `args`, whether an earlier call of this process
  compiled it).

  Rows that differ only in their parameters (a reproduction's base, AWM and OWM models) or in
  their outputs (run name, videos, checkpoint) share a program: the parameters are an argument.
  The key holds everything the program closes over: the task and execution, the protocol, the
  planner's settings, the model's static structure, the dataset statistics' values, the mesh,
  the arguments' shapes and the matmul precision. Tracing and loading a program from the
  persistent cache took 1.3-4.5 s on 2 CPU cores and 8-9 s on an H200 per row.
  """
  used_model = model if (proto.model == 'world_model' or proto.simulator_cost == 'latent') else None
  key = (config.task, repr(config.clip_actions), int(config.frameskip), proto,
         json.dumps(config.plan[proto.planner].to_dict(), sort_keys=True, default=repr),
         used_model, _stats_digest(stats), mesh, jax.tree.structure(args),
         tuple((np.shape(x), str(getattr(x, 'dtype', type(x))), getattr(x, 'sharding', None))
               for x in jax.tree.leaves(args)),
         str(jax.config.jax_default_matmul_precision))
  if key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key], True
  evaluation = mpc.sharded_evaluation(
      env, planner, make_problem_fn(config, env, model, stats, proto), mesh=mesh,
      num_replans=proto.num_replans, execute=proto.execute, frameskip=int(config.frameskip))
  compiled = evaluation.lower(*args).compile()
  _PROGRAMS[key] = compiled
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return compiled, False


def build_planner(config, env, stats, proto):
  p = config.plan
  low = high = None
  if proto.bounded:
    low, high = execution.action_bounds(env, execution.normalizer_from_stats(stats),
                                        int(config.frameskip))
  return planners_lib.make_planner(
      p.planner, p[p.planner], horizon=proto.horizon,
      action_size=int(config.frameskip) * env.action_size, action_low=low, action_high=high,
      open_loop=proto.open_loop)


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
  protocol_lib.protocol(config)  # Checks the config before anything else.
  with io.workdir_lock(workdir, f'plan ({protocol_lib.run_name(config)})',
                       enabled=distributed.is_primary()):
    return _evaluate(config, workdir, checkpoint, progress, mesh)


def _evaluate(config, workdir, checkpoint, progress, mesh):
  t_start = time.perf_counter()
  primary = distributed.is_primary()
  say = print if progress and primary else (lambda *a, **k: None)
  proto = protocol_lib.protocol(config)
  p = config.plan
  n = int(p.num_instances)
  parallel.check_divisible(n, jax.device_count() if mesh is None else mesh, 'plan.num_instances')
  env = envs.load(config.task, clip_actions=config.clip_actions)
  model = params = meta = None
  if p.model == 'world_model' or p.simulator_cost == 'latent':
    say('Loading the world model' + (' (its encoder scores the simulated states)'
                                     if p.model == 'simulator' else '') + ' ...')
    model, params, meta = layout.load_model(config, workdir, checkpoint, env)
    if meta.get('which_note'):
      say(f'Note: plan.checkpoint={p.checkpoint}: {meta["which_note"]}.')
  stats, stats_source = layout.load_stats(config, workdir, env, meta)
  planner = build_planner(config, env, stats, proto)

  load_s = time.perf_counter() - t_start
  indices = protocol_lib.problem_indices(p)
  subset = indices != tuple(range(n))
  problem_args = (config.task, bool(config.clip_actions), n, int(p.seed)) + (
      (indices,) if subset else ())  # As the gap diagnostic calls it: one cache entry.
  which = f', problems {p.problem_indices}' if subset else ''
  say(f'Sampling {n} {config.task} problems (seed {p.seed}{which}) ...')
  t0 = time.perf_counter()
  init, goal, keys = task_problems(*problem_args)
  problems_s = time.perf_counter() - t0
  mesh = parallel.make_mesh() if mesh is None else mesh
  # Every process sampled the same problems; each device keeps its share of them.
  init_d, goal_d, keys_d = parallel.shard_batch((init, goal, keys), mesh, global_batch=True)
  params_d = parallel.replicate(params, mesh)

  budget_text = proto.budget_text()
  say(f'Compiling {proto.settings}, {p.mode}, {n} instances, budget {budget_text} ...')
  t0 = time.perf_counter()
  compiled, reused = _program(config, env, model, stats, proto, planner, mesh,
                              (params_d, init_d, goal_d, keys_d))
  compile_s = time.perf_counter() - t0
  how = "reused this process's program" if reused else 'compiled'
  say(f'  {how} in {compile_s:.2f} s; running ...')
  t0 = time.perf_counter()
  ep = jax.block_until_ready(compiled(params_d, init_d, goal_d, keys_d))
  run_s = time.perf_counter() - t0
  say(f'  ran in {run_s:.2f} s')
  t_outputs = time.perf_counter()
  ep = parallel.gather(ep)
  init, goal = np.asarray(init), np.asarray(goal)

  distances = np.asarray(jax.jit(jax.vmap(jax.vmap(env.distance, (0, None))))(
      jnp.asarray(ep.states), jnp.asarray(goal)))  # (N, T)
  success = np.asarray(ep.success, bool)
  final_states = np.asarray(ep.states)[:, -1]  # (N, S)
  k = int(success.sum())
  plan_nonfinite = np.asarray(ep.plan_nonfinite)  # (N, R) guarded steps or samples per plan.
  bad_plans = ~np.isfinite(np.asarray(ep.plan_costs))  # (N, R) plans without a finite cost.
  first_plans = np.asarray(ep.plans)[:, 0]  # (N, H, frameskip * A) from the true starts.
  realized = None  # Through the simulator a plan's cost is already the realized one.
  if p.model == 'world_model':
    realized = realized_first_plan_costs(config, env, model, params, stats, proto, init, goal,
                                         first_plans)
  out_dir = os.path.join(workdir, layout.PLAN_DIR, protocol_lib.run_name(config))
  if primary:
    os.makedirs(out_dir, exist_ok=True)
    io.clear_done(out_dir)
  results = {
      'task': config.task, 'variant': config.variant, 'run_name': protocol_lib.run_name(config),
      'protocol': dataclasses.asdict(proto),
      'planner_settings': p[p.planner].to_dict(),
      'budget': {k2: getattr(proto, k2) for k2 in ('num_replans', 'execute', 'model_actions',
                                                    'env_steps', 'horizon')},
      'num_instances': n, 'seed': int(p.seed), 'problem_indices': list(indices),
      'seeds': {'problem_key': f'fold_in(fold_in(key({p.seed}), {_PROBLEMS}), i)',
                'episode_key': f'fold_in(fold_in(key({p.seed}), {_EPISODES}), i)'},
      'success_rate': k / n, 'num_success': k,
      'success_rate_ci95': plan_report.wilson_interval(k, n),
      'mean_final_distance': float(np.mean(ep.final_distance)),
      'mean_min_distance': float(np.mean(ep.min_distance)),
      # Non-finite costs or gradients the planners guarded (skipped steps, samples ranked
      # last), and plans left without any finite cost.
      'num_nonfinite': int(plan_nonfinite.sum()),
      'num_nonfinite_plans': int(bad_plans.sum()), 'num_plans': int(bad_plans.size),
      'timing': {
          'compile_seconds': compile_s, 'run_seconds': run_s,
          'program_reused': reused,  # Compiled by an earlier evaluation of this process.
          'seconds_per_episode': run_s,  # All episodes run at once, batched.
          'seconds_per_plan': run_s / proto.num_replans,
          'seconds_per_instance_amortised': run_s / n,
          # Host work around the compiled call: loading the model, stats and planner; sampling
          # the problems; gathering, scoring and writing the outputs (set below).
          'load_seconds': load_s, 'problems_seconds': problems_s,
      },
      'instances': [{
          'index': indices[i], 'success': bool(success[i]),
          'final_distance': float(ep.final_distance[i]),
          'min_distance': float(ep.min_distance[i]),
          'replans_to_success': int(ep.replans_to_success[i]) if success[i] else None,
          'success_step': int(ep.success_step[i]) if success[i] else None,
          'init_state': init[i].tolist(), 'goal_state': goal[i].tolist(),
          'final_state': final_states[i].tolist(),
          'first_plan_cost': float(ep.plan_costs[i, 0]),
          'first_plan_realized_cost': None if realized is None else float(realized[i]),
          'first_plan': first_plans[i].tolist(),  # (H, frameskip * A), normalised actions.
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
  paths, planned_label = plan_report.write_videos(
      out_dir, config, env, model if p.model == 'world_model' else None, params, stats, proto,
      init, goal, ep, int(p.num_videos))
  results['videos'] = {'paths': [os.path.relpath(q, out_dir) for q in paths],
                       'left': planned_label, 'right': 'executed states (env.render), then goal'}
  with io.atomic_path(os.path.join(out_dir, 'distance.png')) as tmp:
    plan_report.write_plot(
        tmp, distances, success,
        f'{config.task}: {proto.settings}, {p.mode}; green success, red failure')
  results['plot'] = 'distance.png'
  results['timing']['outputs_seconds'] = time.perf_counter() - t_outputs
  io.write_json(os.path.join(out_dir, layout.RESULTS_FILE), results)
  io.write_text(os.path.join(out_dir, layout.SUMMARY_FILE), plan_report.summary_markdown(results))
  lo, hi = results['success_rate_ci95']
  say(f'{config.task} {proto.settings} {p.mode}: success {k}/{n} = {k / n:.0%} '
      f'[95% CI {lo:.0%}-{hi:.0%}], mean final distance {results["mean_final_distance"]:.4g}, '
      f'{run_s:.3g} s per batched episode, budget {budget_text}, non-finite: '
      f'{results["num_nonfinite"]} guarded, {results["num_nonfinite_plans"]}/'
      f'{results["num_plans"]} plans')
  raise_if_all_nonfinite(results, out_dir, written=True)
  io.mark_done(out_dir, [layout.RESULTS_FILE, layout.SUMMARY_FILE], num_success=k,
               num_instances=n)
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

