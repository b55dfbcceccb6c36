"""Cross-entropy method (CEM), as DINO-WM runs it (PAPER.md section 3).

Each iteration draws `num_samples` sequences from N(mu, diag sigma^2) (sample 0 is mu itself),
ranks them by cost, and refits mu and sigma (per action coordinate, unbiased std as in the
reference code) to the `num_elites` best. DINO-WM: 300 samples, top 30, 30 iterations (PushT) or
10 (PointMaze, Wall), mu0 = 0, sigma0 = 1; it returns mu.

Non-finite costs rank last (treated as +inf); if every sample's cost is non-finite, the
distribution is left unchanged for that iteration. Counted in info['num_nonfinite'].
"""

import jax
import jax.numpy as jnp

from wmjax.planning import base
from wmjax.types import Cost, PRNGKey


def cem(
    horizon: int,
    action_size: int,
    num_samples: int = 300,
    num_elites: int = 30,
    num_iterations: int = 30,
    init_std: float = 1.0,
    action_low=None,
    action_high=None,
) -> base.Planner:
  """CEM planner.

  Args:
    horizon: H, static.
    action_size: A, static.
    num_samples: population per iteration, static.
    num_elites: elites refitted per iteration, static (2 <= E <= S).
    num_iterations: static.
    init_std: sigma0 (data); `shift` resets sigma to it.
    action_low, action_high: optional bounds (scalar, (A,) or (H, A)); samples are clipped into
      them before evaluation, so mu (a mean of elites) stays inside.

  Returns:
    A `Planner`; `plan` returns mu and info {'cost': cost(mu), 'cost_history': (num_iterations,)
    best sample cost per iteration, 'num_nonfinite': non-finite sample costs}.
  """
  base.check_positive_int(horizon, 'horizon')
  base.check_positive_int(action_size, 'action_size')
  base.check_elites(num_samples, num_elites)
  base.check_positive_int(num_iterations, 'num_iterations')
  bounds = base.make_bounds(action_low, action_high, horizon, action_size)
  init, shift = base.sampling_init_and_shift(horizon, action_size, init_std, bounds)

  def plan(cost: Cost, state: base.PlannerState, key: PRNGKey):
    base.check_plan_shape(state.mean, horizon, action_size, 'state.mean')
    base.check_cost(cost, horizon, action_size)
    base.check_plan_shape(state.std, horizon, action_size, 'state.std')

    def step(carry: base.SamplingCarry, key):
      samples = base.sample_around(key, carry.state, num_samples, bounds, include_mean=True)
      costs = jax.vmap(cost)(samples)
      new_state, best, nonfinite = base.cem_refit(carry.state, samples, costs, num_elites)
      return base.SamplingCarry(new_state, carry.num_nonfinite + nonfinite), best

    with jax.named_scope('plan'):
      carry = base.SamplingCarry(state, jnp.array(0, jnp.int32))
      carry, history = jax.lax.scan(step, carry, jax.random.split(key, num_iterations))
      actions = base.project(carry.state.mean, bounds)
      info = {'cost': cost(actions), 'cost_history': history,
              'num_nonfinite': carry.num_nonfinite}
      return actions, carry.state, info

  return base.Planner(init=init, plan=plan, shift=shift)
