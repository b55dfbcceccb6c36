"""Cross-entropy method (CEM), as DINO-WM runs it (PAPER.md section 3).

Each iteration draws `num_samples` sequences from N(mu, diag sigma^2) (sample 0 is mu itself),
ranks them by cost, and refits mu and sigma (per action coordinate, unbiased std as in the
reference code) to the `num_elites` best. DINO-WM: 300 samples, top 30, 30 iterations (PushT) or
10 (PointMaze, Wall), mu0 = 0, sigma0 = 1; it returns mu.

Non-finite costs rank last (treated as +inf); if every sample's cost is non-finite, the
distribution is left unchanged for that iteration. Counted in info['num_nonfinite'].
"""

import jax

from wmjax.planning import base
from wmjax.planning import sampling
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
  def update(cost: Cost, state: base.PlannerState, key: PRNGKey, bounds):
    samples = sampling.sample_around(key, state, num_samples, bounds, include_mean=True)
    return sampling.cem_refit(state, samples, jax.vmap(cost)(samples), num_elites)

  return sampling.sampling_planner(horizon, action_size, num_samples, num_elites, num_iterations,
                                   init_std, action_low, action_high, update)
