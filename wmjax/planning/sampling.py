"""The sampling planners' shared skeleton: CEM, MPPI and GradCEM fill in one population update.

`sampling_planner` does what the three have in common: the static size checks, the action
bounds, `init` and `shift` (mean 0, std `init_std`; PAPER.md section 3: mu0 = 0, sigma0 = 1), and
`plan`: the shape checks, a `lax.scan` of `num_iterations` updates carrying the distribution and a
count of non-finite costs, the projection of the final mean onto the bounds, and the info dict. A
planner supplies only its update, `update(cost, state, key, bounds) -> (state, best cost (),
num_nonfinite ())`, usually a population drawn with `sample_around` and refitted to its elites
(`cem_refit`; MPPI's weighted refit in `wmjax.planning.mppi`).
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from wmjax.planning import base
from wmjax.types import Cost, PRNGKey

# update(cost, state, key, bounds) -> (new state, best cost (), number of non-finite costs ()).
Update = Callable[[Cost, base.PlannerState, PRNGKey, Optional[base.Bounds]],
                  tuple[base.PlannerState, jax.Array, jax.Array]]


def check_elites(num_samples: int, num_elites: int) -> None:
  base.check_positive_int(num_samples, 'num_samples', 2)
  base.check_positive_int(num_elites, 'num_elites', 2)
  if num_elites > num_samples:
    raise ValueError(
        f'num_elites ({num_elites}) must be <= num_samples ({num_samples}).')


def sampling_init_and_shift(horizon: int, action_size: int, init_std,
                            bounds: Optional[base.Bounds]):
  """`init` and `shift` shared by the sampling planners (CEM, MPPI, GradCEM).

  init: mean 0 (or the given (H, A) mean), std = init_std (PAPER.md section 3: mu0 = 0, sigma0 = 1).
  shift: remaining means move to the front, the tail mean is 0, the std is reset to init_std
  everywhere (as TD-MPC2 warm-starts MPPI).
  """
  shape = (horizon, action_size)

  def init(key: PRNGKey, mean: Optional[jax.Array] = None) -> base.PlannerState:
    del key  # Unused: the initial distribution is deterministic.
    if mean is None:
      mean = jnp.zeros(shape, jnp.float32)
    else:
      base.check_plan_shape(mean, horizon, action_size, 'mean')
    mean = base.project(jnp.asarray(mean, jnp.float32), bounds)
    return base.PlannerState(mean=mean, std=jnp.full(shape, init_std, jnp.float32))

  def shift(state: base.PlannerState, num_executed: int, key: PRNGKey) -> base.PlannerState:
    del key  # Unused.
    n = base.check_num_executed(num_executed, horizon)
    tail = jnp.zeros((n, action_size), state.mean.dtype)
    mean = base.project(base.shift_plan(state.mean, n, tail), bounds)
    return base.PlannerState(mean=mean, std=jnp.full(shape, init_std, state.std.dtype))

  return init, shift


def sample_around(key: PRNGKey, state: base.PlannerState, num_samples: int,
                  bounds: Optional[base.Bounds], include_mean: bool) -> jax.Array:
  """(num_samples, H, A) Gaussian samples mean + std * eps, projected onto the bounds."""
  eps = jax.random.normal(key, (num_samples,) + state.mean.shape)
  samples = state.mean + state.std * eps
  if include_mean:
    samples = samples.at[0].set(state.mean)  # Section 3 (CEM): sample 0 forced to mu.
  return base.project(samples, bounds)


class SamplingCarry(NamedTuple):
  """Loop carry of the sampling planners: the distribution and a non-finite counter."""

  state: base.PlannerState
  num_nonfinite: jax.Array


def rank(samples: jax.Array, costs: jax.Array, num_elites: int):
  """Elites of a population (non-finite costs rank last).

  Args:
    samples: (S, H, A).
    costs: (S,).
    num_elites: E, static.

  Returns:
    (elites (E, H, A), elite_costs (E,) ascending with NaN/inf as +inf, number of non-finite costs).
  """
  costs, num_nonfinite = base.finite_costs(costs)
  neg_costs, idx = jax.lax.top_k(-costs, num_elites)
  return samples[idx], -neg_costs, num_nonfinite


def cem_refit(state: base.PlannerState, samples: jax.Array, costs: jax.Array, num_elites: int):
  """One CEM update: mean and (unbiased) std of the elites; unchanged if no cost is finite.

  Returns:
    (new state, best cost () (+inf if none finite), number of non-finite costs).
  """
  elites, elite_costs, num_nonfinite = rank(samples, costs, num_elites)
  any_finite = jnp.isfinite(elite_costs[0])
  mean = jnp.where(any_finite, jnp.mean(elites, axis=0), state.mean)
  std = jnp.where(any_finite, jnp.std(elites, axis=0, ddof=1), state.std)
  return base.PlannerState(mean=mean, std=std), elite_costs[0], num_nonfinite


def sampling_planner(horizon: int, action_size: int, num_samples: int, num_elites: int,
                     num_iterations: int, init_std, action_low, action_high,
                     update: Update) -> base.Planner:
  """A sampling planner from its population update (module docstring).

  Args:
    horizon: H, static.
    action_size: A, static.
    num_samples: population per iteration, static (>= 2).
    num_elites: elites per iteration, static (2 <= E <= S).
    num_iterations: static.
    init_std: initial std (data); `shift` resets the std to it.
    action_low, action_high: optional bounds (scalar, (A,) or (H, A)).
    update: one iteration, `update(cost, state, key, bounds)`.

  Returns:
    A `Planner`; `plan` returns the projected mean and info {'cost': cost of it,
    'cost_history': (num_iterations,) the best cost of each iteration, 'num_nonfinite': the
    non-finite costs the updates counted}.
  """
  base.check_positive_int(horizon, 'horizon')
  base.check_positive_int(action_size, 'action_size')
  check_elites(num_samples, num_elites)
  base.check_positive_int(num_iterations, 'num_iterations')
  bounds = base.make_bounds(action_low, action_high, horizon, action_size)
  init, shift = sampling_init_and_shift(horizon, action_size, init_std, bounds)

  def plan(cost: Cost, state: base.PlannerState, key: PRNGKey):
    base.check_plan_shape(state.mean, horizon, action_size, 'state.mean')
    base.check_cost(cost, horizon, action_size)
    base.check_plan_shape(state.std, horizon, action_size, 'state.std')

    def step(carry: SamplingCarry, key):
      new_state, best, nonfinite = update(cost, carry.state, key, bounds)
      return SamplingCarry(new_state, carry.num_nonfinite + nonfinite), best

    with jax.named_scope('plan'):
      carry = SamplingCarry(state, jnp.array(0, jnp.int32))
      carry, history = jax.lax.scan(step, carry, jax.random.split(key, num_iterations))
      actions = base.project(carry.state.mean, bounds)
      info = {'cost': cost(actions), 'cost_history': history,
              'num_nonfinite': carry.num_nonfinite}
      return actions, carry.state, info

  return base.Planner(init=init, plan=plan, shift=shift)
