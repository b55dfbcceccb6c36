"""Closed-loop (MPC) and open-loop evaluation of a planner against a real simulator.

An episode is one pure function: observe, plan, execute the first `execute` model actions in
the simulator, warm-start, replan; up to an explicit budget of `num_replans` replans
(PAPER.md section 3: the reference loop has no cap; here the budget is always explicit and
reported beside results). Success is sticky once reached. The whole episode (simulate,
render, encode, plan) is one `lax.scan`, so `jax.vmap` over instances and `jax.jit` over the
batch run every episode of an evaluation inside one compiled program, on CPU, GPU or TPU.

The episode knows the planner only through its `Planner` functions and the model only
through `make_cost(obs, goal_obs) -> Cost` (`wmjax.planning.problems` builds them for a world
model and for the simulator itself, the true-dynamics ceiling): any differentiable dynamics can
be evaluated. Plans are executed by `wmjax.envs.execution`, the one path from normalised model
actions to env steps. The env is anything with the `wmjax.envs.Env` contract (`reset_to`,
`step`, `state_vector`, `success`, `distance`); a Brax, MuJoCo Playground or MJX env becomes one
with `wmjax.envs.brax_compat.FromBrax`, and `brax_compat.true_dynamics_problem` plans through it
with a per-step cost. `sharded_evaluation` splits the instances of an evaluation across devices.

Success and distance are checked after every executed model action (every `frameskip` env
steps), for every planner alike, so planners that execute more actions per replan get no
extra or fewer chances.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from wmjax import parallel
from wmjax.envs import execution
from wmjax.envs.base import Env
from wmjax.planning.base import Planner
from wmjax.planning.problems import MakeCostFn
from wmjax.planning.problems import ObserveFn
from wmjax.planning.problems import Problem
from wmjax.types import Params


@struct.dataclass
class Episode:
  """Result of one episode (leading batch axis after vmap).

  Attributes:
    success: () bool, sticky success.
    success_step: () int32, model actions executed at first success (-1 if never).
    replans_to_success: () int32, replans made up to first success (budget if never).
    final_distance: () task distance to the goal at the end.
    min_distance: () smallest task distance seen at a model-action boundary.
    states: (R * E + 1, S) state vector after every executed model action (R replans,
      E executed actions per replan), starting with the initial state.
    plans: (R, H, frameskip*A) the plan returned at each replan (normalised).
    plan_costs: (R,) the planner's final cost at each replan (non-finite: the planner found no
      finite cost).
    plan_nonfinite: (R,) int32, the planner's info['num_nonfinite'] at each replan (steps or
      samples whose cost or gradient was non-finite and that it guarded).
  """

  success: jax.Array
  success_step: jax.Array
  replans_to_success: jax.Array
  final_distance: jax.Array
  min_distance: jax.Array
  states: jax.Array
  plans: jax.Array
  plan_costs: jax.Array
  plan_nonfinite: jax.Array


def run_episode(
    env: Env,
    planner: Planner,
    observe: ObserveFn,
    make_cost: MakeCostFn,
    normalizer: execution.Normalizer,
    init_state: jax.Array,
    goal_state: jax.Array,
    key: jax.Array,
    *,
    num_replans: int,
    execute: int,
    frameskip: int,
) -> Episode:
  """Runs one MPC episode (open loop: num_replans=1 and execute=horizon).

  Args:
    env: the real simulator (raw, not frame-skipped).
    planner: a `Planner` over normalised model actions (H, frameskip*A).
    observe: state vector (S,) -> observation pytree.
    make_cost: (obs, goal_obs) -> Cost of (H, frameskip*A) normalised actions.
    normalizer: maps normalised model actions to raw env actions.
    init_state: (S,) initial state vector.
    goal_state: (S,) goal state vector.
    key: PRNG key.
    num_replans: static budget of planner calls.
    execute: static number of model actions executed per plan (<= horizon).
    frameskip: raw env steps per model action.

  Returns:
    An `Episode`.
  """
  goal_obs = observe(goal_state)
  key_init, key_loop = jax.random.split(key)
  pstate = planner.init(key_init)

  def outcome(state):
    sv = env.state_vector(state)
    return sv, env.success(sv, goal_state), env.distance(sv, goal_state)

  def replan(carry, key):
    state, pstate = carry
    key_plan, key_shift = jax.random.split(key)
    with jax.named_scope('plan'):
      cost = make_cost(observe(env.state_vector(state)), goal_obs)
      actions, pstate, info = planner.plan(cost, pstate, key_plan)
    state, (svs, succ, dist) = execution.execute_plan(
        env, state, actions[:execute], normalizer, frameskip, outcome)
    pstate = planner.shift(pstate, execute, key_shift)
    nonfinite = jnp.asarray(info.get('num_nonfinite', 0), jnp.int32)
    return (state, pstate), (svs, succ, dist, actions, info['cost'], nonfinite)

  state0 = env.reset_to(init_state)
  _, (svs, succ, dist, plans, costs, nonfinite) = jax.lax.scan(
      replan, (state0, pstate), jax.random.split(key_loop, num_replans))
  # svs: (R, E, S); succ/dist: (R, E).
  succ = succ.reshape(-1)
  dist = dist.reshape(-1)
  reached = jnp.any(succ)
  first = jnp.argmax(succ)
  states = jnp.concatenate([init_state[None], svs.reshape(-1, svs.shape[-1])], axis=0)
  return Episode(
      success=reached,
      success_step=jnp.where(reached, first + 1, -1).astype(jnp.int32),
      replans_to_success=jnp.where(reached, first // execute + 1, num_replans).astype(jnp.int32),
      final_distance=dist[-1],
      min_distance=jnp.min(dist),
      states=states,
      plans=plans,
      plan_costs=costs,
      plan_nonfinite=nonfinite,
  )


def evaluate(
    env: Env,
    planner: Planner,
    observe: ObserveFn,
    make_cost: MakeCostFn,
    normalizer: execution.Normalizer,
    init_states: jax.Array,
    goal_states: jax.Array,
    keys: jax.Array,
    *,
    num_replans: int,
    execute: int,
    frameskip: int,
) -> Episode:
  """Runs a batch of episodes with `vmap` (jit the call). Shapes: (B, S), (B, S), (B,) keys."""
  if init_states.shape != goal_states.shape or init_states.shape[-1] != env.state_size:
    raise ValueError(
        f'init_states and goal_states must both be (B, {env.state_size}); got '
        f'{init_states.shape} and {goal_states.shape}.')
  horizon = jax.eval_shape(planner.init, jax.random.key(0)).mean.shape[0]
  if not 1 <= execute <= horizon or num_replans < 1:
    raise ValueError(
        f'Need 1 <= execute <= horizon ({horizon}) and num_replans >= 1; got execute={execute}, '
        f'num_replans={num_replans}.')
  episode = lambda i, g, k: run_episode(
      env, planner, observe, make_cost, normalizer, i, g, k,
      num_replans=num_replans, execute=execute, frameskip=frameskip)
  return jax.vmap(episode)(init_states, goal_states, keys)


def sharded_evaluation(
    env: Env,
    planner: Planner,
    make_problem: Callable[[Params], Problem],
    *,
    mesh: Mesh,
    num_replans: int,
    execute: int,
    frameskip: int,
) -> Callable[..., Episode]:
  """`evaluate` as one jitted function with the instances split across the mesh's devices.

  Args:
    env, planner: as for `evaluate` (closed over: the same on every device).
    make_problem: params -> `Problem`, called inside the jitted function, so the parameters
      stay an argument (replicated) rather than constants of the program.
    mesh: a 1-D mesh (`wmjax.parallel.make_mesh`).
    num_replans, execute, frameskip: as for `evaluate`.

  Returns:
    `fn(params, init_states (N, S), goal_states (N, S), keys (N,)) -> Episode`, jitted
    (`fn.lower(...).compile()` times compilation apart). Pass params through
    `parallel.replicate` and the instances through `parallel.shard_batch` (or host arrays in
    one process); the outputs are split along the instances (`parallel.gather` them).
  """

  def run(params, init_states, goal_states, keys):
    problem = make_problem(params)
    return evaluate(env, planner, problem.observe, problem.make_cost, problem.normalizer,
                    init_states, goal_states, keys, num_replans=num_replans, execute=execute,
                    frameskip=frameskip)

  return parallel.shard_map_instances(run, mesh, num_replicated=1)


def sharded_evaluate(env: Env, planner: Planner, make_problem: Callable[[Params], Problem],
                     params: Params, init_states: jax.Array, goal_states: jax.Array,
                     keys: jax.Array, *, mesh: Mesh, num_replans: int, execute: int,
                     frameskip: int) -> Episode:
  """Runs `sharded_evaluation` once on host inputs and gathers the episodes.

  Every process passes the same instances and parameters; per-instance results equal the
  unsharded `evaluate`'s (each instance runs the same program on one device).

  Args:
    env, planner, make_problem, mesh, num_replans, execute, frameskip: as for
      `sharded_evaluation`.
    params: the problem's parameters (None when it has none).
    init_states: (N, S) initial state vectors, N divisible by the device count.
    goal_states: (N, S) goal state vectors.
    keys: (N,) PRNG keys.

  Returns:
    An `Episode` of host numpy arrays with leading axis N, on every process. Compiles on every
    call; for repeated runs keep the function `sharded_evaluation` returns.
  """
  parallel.check_divisible(init_states.shape[0], mesh, 'the number of evaluation instances')
  args = parallel.shard_batch((init_states, goal_states, keys), mesh, global_batch=True)
  fn = sharded_evaluation(env, planner, make_problem, mesh=mesh, num_replans=num_replans,
                          execute=execute, frameskip=frameskip)
  return parallel.gather(fn(parallel.replicate(params, mesh), *args))
