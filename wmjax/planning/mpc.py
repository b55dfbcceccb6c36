"""Closed-loop (MPC) and open-loop evaluation of a planner against a real simulator.

An episode is one pure function: observe, plan, execute the first `execute` model actions in
the simulator, warm-start, replan; up to an explicit budget of `num_replans` replans
(PAPER.md section 3: the reference loop has no cap; here the budget is always explicit and
reported beside results). Success is sticky once reached. The whole episode (simulate,
render, encode, plan) is one `lax.scan`, so `jax.vmap` over instances and `jax.jit` over the
batch run every episode of an evaluation inside one compiled program, on CPU, GPU or TPU.

The episode knows the planner only through its `Planner` functions and the model only
through `make_cost(obs, goal_obs) -> Cost`: any differentiable dynamics can be evaluated,
including the simulator itself (the true-dynamics ceiling). The env is anything with the
`wmjax.envs.Env` contract (`reset_to`, `step`, `state_vector`, `success`, `distance`); a Brax,
MuJoCo Playground or MJX env becomes one with `wmjax.envs.brax_compat.FromBrax`, and
`brax_compat.true_dynamics_problem` plans through it with a per-step cost.

Success and distance are checked after every executed model action (every `frameskip` env
steps), for every planner alike, so planners that execute more actions per replan get no
extra or fewer chances.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from wmjax.envs import render as render_lib
from wmjax.envs.base import Env
from wmjax.planning import objectives
from wmjax.planning.base import Planner
from wmjax.types import Cost, Params

# (state vector (S,)) -> observation pytree given to `make_cost`.
ObserveFn = Callable[[jax.Array], dict]
# (obs, goal_obs) -> cost of a normalised model-action sequence (H, frameskip*A).
MakeCostFn = Callable[[dict, dict], Cost]


@struct.dataclass
class Normalizer:
  """Dataset statistics mapping normalised model actions / proprio to raw units.

  Attributes:
    action_mean: (A,) raw action mean.
    action_std: (A,) raw action std.
    proprio_mean: (P,) raw proprio mean.
    proprio_std: (P,) raw proprio std.
  """

  action_mean: jax.Array
  action_std: jax.Array
  proprio_mean: jax.Array
  proprio_std: jax.Array

  def raw_actions(self, actions: jax.Array, frameskip: int) -> jax.Array:
    """(H, frameskip*A) normalised model actions -> (H, frameskip, A) raw env actions."""
    h = actions.shape[0]
    a = self.action_mean.shape[0]
    return actions.reshape(h, frameskip, a) * self.action_std + self.action_mean

  def proprio(self, proprio: jax.Array) -> jax.Array:
    """(P,) raw -> (P,) normalised."""
    return (proprio - self.proprio_mean) / self.proprio_std


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


def pixel_observer(env: Env, normalizer: Normalizer, image_size: int) -> ObserveFn:
  """Observation as the world model sees it: rendered pixels, normalised proprio, state."""

  def observe(state_vector: jax.Array) -> dict:
    state = env.reset_to(state_vector)
    return {
        'pixels': render_lib.to_uint8(env.render(state_vector, image_size)),
        'proprio': normalizer.proprio(env.proprio(state)),
        'state': state_vector,
    }

  return observe


def run_episode(
    env: Env,
    planner: Planner,
    observe: ObserveFn,
    make_cost: MakeCostFn,
    normalizer: Normalizer,
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

  def step_model_action(state, raw):  # raw: (frameskip, A)
    state = jax.lax.fori_loop(0, frameskip, lambda i, s: env.step(s, raw[i]), state)
    sv = env.state_vector(state)
    return state, (sv, env.success(sv, goal_state), env.distance(sv, goal_state))

  def replan(carry, key):
    state, pstate = carry
    key_plan, key_shift = jax.random.split(key)
    with jax.named_scope('plan'):
      cost = make_cost(observe(env.state_vector(state)), goal_obs)
      actions, pstate, info = planner.plan(cost, pstate, key_plan)
    raw = normalizer.raw_actions(actions[:execute], frameskip)
    state, (svs, succ, dist) = jax.lax.scan(step_model_action, state, raw)
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
    normalizer: Normalizer,
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


class Problem(NamedTuple):
  """What `evaluate` needs besides the env and the planner: how to observe, what to minimise.

  Attributes:
    observe: state vector (S,) -> observation pytree.
    make_cost: (obs, goal_obs) -> cost of (H, frameskip*A) normalised model actions.
    normalizer: normalised <-> raw units.
  """

  observe: ObserveFn
  make_cost: MakeCostFn
  normalizer: Normalizer


def normalizer_from_stats(stats: Any) -> Normalizer:
  """A `Normalizer` from dataset statistics (e.g. `wmjax.data.Stats`): raw action and proprio
  means and stds, (A,) and (P,)."""
  f = lambda x: jnp.asarray(x, jnp.float32)
  return Normalizer(action_mean=f(stats.action_mean), action_std=f(stats.action_std),
                    proprio_mean=f(stats.proprio_mean), proprio_std=f(stats.proprio_std))


def identity_normalizer(action_size: int, proprio_size: int = 0) -> Normalizer:
  """A `Normalizer` that leaves raw actions (A,) and proprio (P,) as they are."""
  return Normalizer(action_mean=jnp.zeros((action_size,)), action_std=jnp.ones((action_size,)),
                    proprio_mean=jnp.zeros((proprio_size,)),
                    proprio_std=jnp.ones((proprio_size,)))


def action_bounds(env: Env, normalizer: Normalizer, frameskip: int) -> tuple[jax.Array, jax.Array]:
  """Normalised bounds of valid raw actions, tiled over frameskip: (low, high), each
  (frameskip*A,). Plans inside them are what the simulator executes unclipped."""
  low = (env.action_low - normalizer.action_mean) / normalizer.action_std
  high = (env.action_high - normalizer.action_mean) / normalizer.action_std
  return jnp.tile(low, frameskip), jnp.tile(high, frameskip)


def world_model_problem(
    env: Env,
    model: Any,
    params: Params,
    stats: Any,
    *,
    objective: str = 'last',
    alpha=1.0,
    base=0.5,
    rollout: str = 'markov',
) -> Problem:
  """Planning through a learned world model (PAPER.md section 3).

  Observations are rendered at the model's image size (unless its encoder reads the state) with
  proprio normalised by the dataset statistics; the cost encodes the current and goal observations with the model's frozen encoder
  and scores a latent rollout of the actions (`objectives.world_model_cost`).

  Args:
    env: the real simulator (raw, not frame-skipped).
    model: a `wmjax.models.WorldModel` (encode, rollout, image_size, action_dim).
    params: its parameters (pass them as a jit argument, not a constant, for large models).
    stats: dataset statistics with action/proprio means and stds (e.g. `wmjax.data.Stats`).
    objective: 'last' | 'all'.
    alpha: proprio weight of the cost.
    base: decay of the 'all' weights.
    rollout: 'markov' | 'history'.

  Returns:
    A `Problem`.
  """
  normalizer = normalizer_from_stats(stats)
  if model.obs_key == 'pixels':
    observe = pixel_observer(env, normalizer, int(model.image_size))
  else:  # A state encoder: nothing to render.
    def observe(sv: jax.Array) -> dict:
      return {'state': sv, 'proprio': normalizer.proprio(env.proprio(env.reset_to(sv)))}

  def make_cost(obs: dict, goal_obs: dict) -> Cost:
    z0 = model.encode(params, obs)
    z_goal = model.encode(params, goal_obs)
    return objectives.world_model_cost(
        model, params, z0, z_goal, mode=objective, alpha=alpha, base=base, rollout=rollout,
        action_size=int(model.action_dim))

  return Problem(observe=observe, make_cost=make_cost, normalizer=normalizer)


def simulator_problem(
    env: Env,
    stats: Any,
    *,
    frameskip: int,
    objective: str = 'last',
    alpha=1.0,
    base=0.5,
    cost_env: Optional[Env] = None,
    latent_fn: Optional[Callable[[jax.Array, jax.Array], Any]] = None,
) -> Problem:
  """Planning with the true dynamics as the model: the ceiling a perfect model could reach.

  The cost simulates the actions in `cost_env` (default `env`) and applies the same objective as
  the latent cost to a "latent" of every simulated state: `latent_fn` (e.g.
  `rendered_latent_fn`: a world model's encoder on the rendered frame, so the cost is exactly the
  one planning through that model minimises, with a perfect predictor), by default
  {'visual': (1, S) state z-scored by the dataset, 'proprio': (P,) normalised proprio}.
  Gradients through contacts can be zero or non-finite; the planners skip non-finite steps
  (PAPER.md section 9: wall contact gives zero gradient).

  Args:
    env: the real simulator.
    stats: dataset statistics with action, proprio and state means and stds.
    frameskip: raw env steps per model action.
    objective: 'last' | 'all'.
    alpha: proprio weight.
    base: decay of the 'all' weights.
    cost_env: the simulator used inside the cost (e.g. a copy whose solver `jax.grad` can
      differentiate); defaults to `env`.
    latent_fn: (state vector (S,), normalised proprio (P,)) -> latent pytree; default the
      z-scored state (above).

  Returns:
    A `Problem`.
  """
  if objective not in objectives.MODES:
    raise ValueError(f'Unknown objective mode {objective!r}; choose one of {objectives.MODES}.')
  normalizer = normalizer_from_stats(stats)
  sim = env if cost_env is None else cost_env
  state_mean = jnp.asarray(stats.state_mean, jnp.float32)
  state_std = jnp.asarray(stats.state_std, jnp.float32)

  def latent(state) -> Any:
    sv, proprio = sim.state_vector(state), normalizer.proprio(sim.proprio(state))
    if latent_fn is not None:
      return latent_fn(sv, proprio)
    return {'visual': ((sv - state_mean) / state_std)[None], 'proprio': proprio}

  def observe(state_vector: jax.Array) -> dict:
    return {'state': state_vector}

  def make_cost(obs: dict, goal_obs: dict) -> Cost:
    start = sim.reset_to(obs['state'])
    z_goal = latent(sim.reset_to(goal_obs['state']))

    def cost(actions: jax.Array) -> jax.Array:
      raw = normalizer.raw_actions(actions, frameskip)  # (H, frameskip, A)

      def model_action(state, raw_fs):
        state = jax.lax.fori_loop(0, frameskip, lambda i, s: sim.step(s, raw_fs[i]), state)
        return state, latent(state)

      _, zs = jax.lax.scan(model_action, start, raw)
      traj = jax.tree.map(lambda x0, x: jnp.concatenate([x0[None], x]), latent(start), zs)
      return objectives.trajectory_cost(traj, z_goal, mode=objective, alpha=alpha, base=base)

    return cost

  return Problem(observe=observe, make_cost=make_cost, normalizer=normalizer)


def rendered_latent_fn(env: Env, model: Any, params: Params
                       ) -> Callable[[jax.Array, jax.Array], Any]:
  """A world model's latent of a simulated state, for `simulator_problem(latent_fn=...)`.

  The state is rendered at the model's image size and encoded with the model's frozen encoder,
  as the model sees observations (`pixel_observer`), but unquantised, so gradient planners can
  differentiate the cost through the renderer. A state encoder reads the state directly.

  Returns:
    (state vector (S,), normalised proprio (P,)) -> Latent {'visual': (N, Dv), 'proprio': (Dp,)}.
  """
  if model.obs_key != 'pixels':
    return lambda sv, proprio: model.encode(params, {'state': sv, 'proprio': proprio})
  size = int(model.image_size)

  def latent(sv: jax.Array, proprio: jax.Array) -> Any:
    pixels = jnp.clip(env.render(sv, size), 0.0, 1.0) * 255.0
    return model.encode(params, {'pixels': pixels, 'proprio': proprio}, float_pixels=True)

  return latent
