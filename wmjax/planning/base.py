"""The planner contract: a planner is a NamedTuple of pure functions (optax / evosax style).

Every planner optimises a COST of one action sequence, `cost(actions (H, A)) -> ()`, so it works
with any differentiable (or, for the sampling planners, any) JAX function, not only a world model.
A planner is written for ONE problem; batching over instances is `jax.vmap` by the caller, with the
cost built inside the vmapped function from per-instance arrays:

  planner = wmjax.planning.cem(horizon=5, action_size=10)

  def solve(z0, z_goal, key):
    cost = world_model_cost(model, params, z0, z_goal, mode='last', alpha=1.0)
    k_init, k_plan = jax.random.split(key)
    actions, state, info = planner.plan(cost, planner.init(k_init), k_plan)
    return actions, info

  actions, info = jax.jit(jax.vmap(solve))(z0s, z_goals, keys)

Shape-setting sizes (horizon, action size, samples, elites, iterations, steps) are static
constructor arguments. Continuous hyperparameters (noise std, init std, temperature, bounds, the
learning rate inside an optax transform) are plain JAX data closed over by the functions, never used
in Python control flow, so a planner may be constructed inside a vmapped or jitted function from
traced values to sweep them.

The helpers below (size and shape checks, bounds, non-finite guards) are shared by every planner;
the sampling planners share their whole skeleton in `wmjax.planning.sampling`.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wmjax.types import Cost, PRNGKey

# info returned by `plan`: {'cost': (), 'cost_history': (iterations,), 'num_nonfinite': () int32}.
Info = dict[str, jax.Array]


@struct.dataclass
class PlannerState:
  """What a planner carries between calls (warm starts in MPC).

  Attributes:
    mean: (H, A) the current plan (gradient planners: the action sequence itself; sampling
      planners: the mean of the sampling distribution).
    std: (H, A) sampling standard deviation (sampling planners); for gradient planners the
      std of the fresh actions appended by `shift` (= init_std).
  """

  mean: jax.Array
  std: jax.Array


class Planner(NamedTuple):
  """A planner as three pure functions.

  Attributes:
    init: `init(key, mean=None) -> PlannerState`. Initial plan: gradient planners draw
      N(0, init_std) actions, sampling planners start from mean 0 (PAPER.md section 3); a given
      (H, A) `mean` replaces either.
    plan: `plan(cost, state, key) -> (actions (H, A), state, info)`; `info` holds 'cost' (cost of
      the returned actions), 'cost_history' (one value per iteration/step) and 'num_nonfinite'
      (how many non-finite costs or gradients were guarded).
    shift: `shift(state, num_executed, key) -> state` for warm starting after executing the first
      `num_executed` (a static int in [0, H]) actions: the remaining actions move to the front, and
      the tail is refilled (fresh N(0, init_std) actions for gradient planners; mean 0 with the std
      reset to init_std everywhere for sampling planners).
  """

  init: Callable[..., PlannerState]
  plan: Callable[[Cost, PlannerState, PRNGKey], tuple[jax.Array, PlannerState, Info]]
  shift: Callable[[PlannerState, int, PRNGKey], PlannerState]


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
  """Static size check: a Python int >= minimum, else ValueError."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'{name} must be a Python int >= {minimum} (a static size); got {value!r}.')
  return value


def check_optimizer(optimizer: Any) -> None:
  """The gradient planners take any optax transformation, and nothing else."""
  if not isinstance(optimizer, optax.GradientTransformation):
    raise ValueError(
        f'optimizer must be an optax.GradientTransformation (e.g. optax.adam(0.2)); got '
        f'{type(optimizer).__name__}.')


class Bounds(NamedTuple):
  """Action bounds broadcast to the plan shape: low, high (H, A)."""

  low: jax.Array
  high: jax.Array


def make_bounds(action_low, action_high, horizon: int, action_size: int) -> Optional[Bounds]:
  """Broadcasts optional bounds (scalar, (A,) or (H, A)) to (H, A); None when both are None."""
  if action_low is None and action_high is None:
    return None
  if action_low is None or action_high is None:
    raise ValueError('Give both action_low and action_high, or neither (got only one).')
  out = []
  for name, b in (('action_low', action_low), ('action_high', action_high)):
    b = jnp.asarray(b, jnp.float32)
    try:
      out.append(jnp.broadcast_to(b, (horizon, action_size)))
    except ValueError:
      raise ValueError(
          f'{name} has shape {b.shape}; expected a scalar, ({action_size},) or '
          f'({horizon}, {action_size}).') from None
  return Bounds(*out)


def project(actions: jax.Array, bounds: Optional[Bounds]) -> jax.Array:
  """Clips (..., H, A) actions into the bounds (identity without bounds)."""
  if bounds is None:
    return actions
  return jnp.clip(actions, bounds.low, bounds.high)


def check_plan_shape(x: jax.Array, horizon: int, action_size: int, name: str) -> None:
  if jnp.shape(x) != (horizon, action_size):
    raise ValueError(
        f'{name} has shape {jnp.shape(x)}; this planner was built for (horizon, action_size) = '
        f'({horizon}, {action_size}).')


def check_cost(cost: Cost, horizon: int, action_size: int) -> None:
  """Trace-time check that `cost` maps (H, A) actions to a scalar (no computation is run)."""
  out = jax.eval_shape(cost, jax.ShapeDtypeStruct((horizon, action_size), jnp.float32))
  if not hasattr(out, 'shape') or out.shape != ():
    raise ValueError(
        f'cost(actions ({horizon}, {action_size})) must return a scalar array; got '
        f'{getattr(out, "shape", out)}. Build the cost for one instance and vmap the planner.')


def check_num_executed(num_executed: Any, horizon: int) -> int:
  if (isinstance(num_executed, bool) or not isinstance(num_executed, int)
      or not 0 <= num_executed <= horizon):
    raise ValueError(
        f'num_executed must be a static Python int in [0, {horizon}]; got {num_executed!r}.')
  return num_executed


def shift_plan(plan: jax.Array, num_executed: int, tail: jax.Array) -> jax.Array:
  """Drops the first `num_executed` rows of an (H, A) plan and appends `tail` (num_executed, A)."""
  return jnp.concatenate([plan[num_executed:], tail], axis=0)


def finite_costs(costs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Non-finite costs rank last: returns (costs with NaN/inf -> +inf, number non-finite)."""
  finite = jnp.isfinite(costs)
  return jnp.where(finite, costs, jnp.inf), jnp.sum(~finite).astype(jnp.int32)


def all_finite(tree: Any) -> jax.Array:
  """() bool: every leaf of a pytree is finite."""
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
