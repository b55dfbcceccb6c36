"""MPPI with the TD-MPC2 update (PAPER.md section 3).

Each iteration draws `num_samples` sequences from N(mean, diag std^2), keeps the `num_elites`
lowest-cost ones, weights them by exp(-temperature * (cost - min cost)), and sets the mean and std
to the weighted mean and std of the elites, the std clamped to [min_std, max_std]. TD-MPC2: 512
samples, 64 elites, 6 iterations, temperature 0.5, std in [0.05, 2] starting at 2. Here
`temperature` multiplies the negated cost as in TD-MPC2, i.e. it is the inverse of the classic MPPI
lambda. The mean is returned (TD-MPC2 instead samples one elite by its weight).

The authors' MPPI (K samples, noise I, temperature 1, one update per replan) is, up to its
control-cost term lambda * u^T Sigma^-1 eps (not included here):
  mppi(H, A, num_samples=K, num_elites=K, num_iterations=1, temperature=1.0,
       init_std=1.0, min_std=1.0, max_std=1.0)

Non-finite costs rank last (+inf, weight 0); if all are non-finite the distribution is left
unchanged for that iteration. Counted in info['num_nonfinite'].
"""

import jax
import jax.numpy as jnp

from wmjax.planning import base
from wmjax.planning import sampling
from wmjax.types import Cost, PRNGKey


def mppi_refit(state: base.PlannerState, samples: jax.Array, costs: jax.Array, num_elites: int,
               temperature, min_std, max_std):
  """One TD-MPC2 MPPI update from a population (S, H, A) with costs (S,).

  Returns:
    (new state, best cost () (+inf if none finite), number of non-finite costs).
  """
  elites, elite_costs, num_nonfinite = sampling.rank(samples, costs, num_elites)
  best = elite_costs[0]
  any_finite = jnp.isfinite(best)
  finite = jnp.isfinite(elite_costs)
  gap = jnp.where(finite, elite_costs - jnp.where(any_finite, best, 0.0), 0.0)
  score = jnp.where(finite, jnp.exp(-temperature * gap), 0.0)
  score = score / (jnp.sum(score) + 1e-9)
  w = score[:, None, None]
  mean = jnp.sum(w * elites, axis=0)
  std = jnp.sqrt(jnp.sum(w * (elites - mean) ** 2, axis=0))
  std = jnp.clip(std, min_std, max_std)
  mean = jnp.where(any_finite, mean, state.mean)
  std = jnp.where(any_finite, std, state.std)
  return base.PlannerState(mean=mean, std=std), best, num_nonfinite


def mppi(
    horizon: int,
    action_size: int,
    num_samples: int = 512,
    num_elites: int = 64,
    num_iterations: int = 6,
    temperature: float = 0.5,
    init_std: float = 2.0,
    min_std: float = 0.05,
    max_std: float = 2.0,
    action_low=None,
    action_high=None,
) -> base.Planner:
  """MPPI planner (TD-MPC2 variant by default).

  Args:
    horizon: H, static.
    action_size: A, static.
    num_samples: population per iteration, static.
    num_elites: elites weighted per iteration, static (2 <= E <= S).
    num_iterations: static.
    temperature: inverse temperature of the elite weights exp(-temperature * dcost) (data).
    init_std: initial std; `shift` resets the std to it (data).
    min_std, max_std: clamp of the refitted std (data).
    action_low, action_high: optional bounds; samples are clipped into them before evaluation.

  Returns:
    A `Planner`; `plan` returns the mean and info {'cost': cost(mean), 'cost_history':
    (num_iterations,) best sample cost per iteration, 'num_nonfinite': non-finite sample costs}.
  """
  def update(cost: Cost, state: base.PlannerState, key: PRNGKey, bounds):
    samples = sampling.sample_around(key, state, num_samples, bounds, include_mean=False)
    return mppi_refit(state, samples, jax.vmap(cost)(samples), num_elites, temperature, min_std,
                      max_std)

  return sampling.sampling_planner(horizon, action_size, num_samples, num_elites, num_iterations,
                                   init_std, action_low, action_high, update)
