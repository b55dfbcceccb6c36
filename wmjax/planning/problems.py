"""Planning problems: how an episode observes the simulator, and the cost a planner minimises.

A `Problem` is what `wmjax.planning.mpc.evaluate` needs besides the env and the planner:
`observe(state vector) -> obs`, `make_cost(obs, goal_obs) -> Cost` of normalised model actions
(H, frameskip*A), and the `Normalizer` that executes them. Built here:

  * `world_model_problem`: the learned model's latent rollout (PAPER.md section 3);
  * `simulator_problem`: the true dynamics as the model (the ceiling a perfect predictor gives),
    scoring z-scored states, the task's own distance to the goal (`task_distance`) or, with
    `rendered_latent_fn`, the world model's own latents of the rendered simulated frames
    (observed as the model sees them: `pixel_observer`).

`wmjax.envs.brax_compat.true_dynamics_problem` builds one for any Brax / MJX env.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from wmjax.envs import execution
from wmjax.envs import render as render_lib
from wmjax.envs.base import Env
from wmjax.planning import objectives
from wmjax.types import Cost, Params

# (state vector (S,)) -> observation pytree given to `make_cost`.
ObserveFn = Callable[[jax.Array], dict]
# (obs, goal_obs) -> cost of a normalised model-action sequence (H, frameskip*A).
MakeCostFn = Callable[[dict, dict], Cost]


@dataclasses.dataclass(frozen=True)
class Problem:
  """What `mpc.evaluate` needs besides the env and the planner: how to observe, what to minimise.

  Attributes:
    observe: state vector (S,) -> observation pytree.
    make_cost: (obs, goal_obs) -> cost of (H, frameskip*A) normalised model actions.
    normalizer: normalised <-> raw units.
  """

  observe: ObserveFn
  make_cost: MakeCostFn
  normalizer: execution.Normalizer


def pixel_observer(env: Env, normalizer: execution.Normalizer, image_size: int) -> ObserveFn:
  """Observation as the world model sees it: rendered pixels, normalised proprio, state."""

  def observe(state_vector: jax.Array) -> dict:
    state = env.reset_to(state_vector)
    return {
        'pixels': render_lib.to_uint8(env.render(state_vector, image_size)),
        'proprio': normalizer.normalize_proprio(env.proprio(state)),
        'state': state_vector,
    }

  return observe


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
  proprio normalised by the dataset statistics; the cost encodes the current and goal
  observations with the model's frozen encoder and scores a latent rollout of the actions
  (`objectives.world_model_cost`).

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
  normalizer = execution.normalizer_from_stats(stats)
  if model.obs_key == 'pixels':
    observe = pixel_observer(env, normalizer, int(model.image_size))
  else:  # A state encoder: nothing to render.
    def observe(sv: jax.Array) -> dict:
      return {'state': sv, 'proprio': normalizer.normalize_proprio(env.proprio(env.reset_to(sv)))}

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
    task_distance: bool = False,
) -> Problem:
  """Planning with the true dynamics as the model: the ceiling a perfect model could reach.

  The cost simulates the actions in `cost_env` (default `env`) and applies the same objective as
  the latent cost to a "latent" of every simulated state: `latent_fn` (e.g.
  `rendered_latent_fn`: a world model's encoder on the rendered frame, so the cost is exactly the
  one planning through that model minimises, with a perfect predictor), by default
  {'visual': (1, S) state z-scored by the dataset, 'proprio': (P,) normalised proprio}.
  With objective 'last' only the final state gets a latent (for a rendered latent, one frame
  rendered and encoded per plan instead of one per model action: the Wall `cpu` ceiling row,
  render-bound, ran 4.7x faster).
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
    task_distance: score with the task's own distance instead of a latent: `env.distance` of
      each scored state to the goal, squared and divided by the start's (1 at the start, 0 at
      the goal, whatever the task's units), weighted over time as the objective weights latent
      distances. The best case of a cost: it measures what success tests. Excludes `latent_fn`
      and ignores `alpha`.

  Returns:
    A `Problem`.
  """
  if objective not in objectives.MODES:
    raise ValueError(f'Unknown objective mode {objective!r}; choose one of {objectives.MODES}.')
  if task_distance and latent_fn is not None:
    raise ValueError('simulator_problem: task_distance=True scores states with env.distance; '
                     'pass no latent_fn with it.')
  normalizer = execution.normalizer_from_stats(stats)
  sim = env if cost_env is None else cost_env
  state_mean = jnp.asarray(stats.state_mean, jnp.float32)
  state_std = jnp.asarray(stats.state_std, jnp.float32)

  def latent(state) -> Any:
    sv, proprio = sim.state_vector(state), normalizer.normalize_proprio(sim.proprio(state))
    if latent_fn is not None:
      return latent_fn(sv, proprio)
    return {'visual': ((sv - state_mean) / state_std)[None], 'proprio': proprio}

  def observe(state_vector: jax.Array) -> dict:
    return {'state': state_vector}

  def make_cost(obs: dict, goal_obs: dict) -> Cost:
    start = sim.reset_to(obs['state'])
    if task_distance:
      return _task_distance_cost(sim, start, goal_obs['state'], normalizer, frameskip,
                                 objective, base)
    z_goal = latent(sim.reset_to(goal_obs['state']))

    def cost(actions: jax.Array) -> jax.Array:
      if objective == 'last':  # Only the final state is scored: render and encode it alone.
        final, _ = execution.execute_plan(sim, start, actions, normalizer, frameskip,
                                          lambda s: ())
        traj = jax.tree.map(lambda x: x[None], latent(final))
      else:
        _, zs = execution.execute_plan(sim, start, actions, normalizer, frameskip, latent)
        traj = jax.tree.map(lambda x0, x: jnp.concatenate([x0[None], x]), latent(start), zs)
      return objectives.trajectory_cost(traj, z_goal, mode=objective, alpha=alpha, base=base)

    return cost

  return Problem(observe=observe, make_cost=make_cost, normalizer=normalizer)


def _task_distance_cost(sim: Env, start, goal: jax.Array, normalizer, frameskip: int,
                        objective: str, base) -> Cost:
  """`simulator_problem`'s cost with `task_distance`: d(s_t, goal)^2 / d(s_0, goal)^2 over the
  simulated states, combined over time as `objectives.trajectory_cost` combines latent distances
  ('last': the final state's; 'all': sum_t c_t d_t / (T+1), t = 0..T)."""
  scale = jnp.maximum(jnp.square(sim.distance(sim.state_vector(start), goal)), 1e-12)

  def scored(state) -> jax.Array:
    return jnp.square(sim.distance(sim.state_vector(state), goal)) / scale

  def cost(actions: jax.Array) -> jax.Array:
    if objective == 'last':
      final, _ = execution.execute_plan(sim, start, actions, normalizer, frameskip,
                                        lambda s: ())
      return scored(final)
    _, ds = execution.execute_plan(sim, start, actions, normalizer, frameskip, scored)
    ds = jnp.concatenate([jnp.ones((1,), ds.dtype), ds])  # d_0 / d_0 = 1.
    return jnp.mean(objectives.trajectory_weights(ds.shape[0], base) * ds)

  return cost


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
