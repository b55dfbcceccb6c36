"""GradCEM: CEM whose samples are refined by gradient steps before ranking (PAPER.md section 3).

Per CEM iteration: draw `num_samples` sequences (sample 0 = mu), take `num_grad_steps` (paper: 1)
optimiser steps on every sample (paper: Adam lr 0.3, a fresh optimiser state per iteration, each
sample optimised independently), evaluate the cost of the REFINED samples, and refit mu, sigma to
the elites chosen among the refined samples. (The authors' code ranks and refits from the
pre-gradient samples, a bug this implementation does not reproduce.) Returns mu.

Non-finite values: a sample whose cost or gradient is non-finite skips its step (unchanged, like
the gradient planner); refined samples with non-finite costs rank last; if none is finite the
distribution is left unchanged. info['num_nonfinite'] counts skipped steps plus non-finite
refined-sample costs.
"""

import jax
import jax.numpy as jnp
import optax

from wmjax.planning import base
from wmjax.planning import sampling
from wmjax.types import Cost, PRNGKey


def gradcem(
    horizon: int,
    action_size: int,
    optimizer: optax.GradientTransformation,
    num_samples: int = 300,
    num_elites: int = 30,
    num_iterations: int = 30,
    num_grad_steps: int = 1,
    init_std: float = 1.0,
    noise_std: float = 0.0,
    action_low=None,
    action_high=None,
) -> base.Planner:
  """GradCEM planner.

  Args:
    horizon: H, static.
    action_size: A, static.
    optimizer: optax transformation applied to each sample independently (paper: adam(0.3)).
    num_samples: population per iteration, static.
    num_elites: static (2 <= E <= S).
    num_iterations: CEM iterations, static.
    num_grad_steps: optimiser steps per sample per iteration, static (paper: 1).
    init_std: sigma0 (data); `shift` resets sigma to it.
    noise_std: Gaussian noise added after each gradient step (data; 0 by default).
    action_low, action_high: optional bounds; samples are projected after sampling and after
      every gradient step.

  Returns:
    A `Planner`; `plan` returns mu and info {'cost': cost(mu), 'cost_history': (num_iterations,)
    best refined-sample cost per iteration, 'num_nonfinite'}.
  """
  base.check_positive_int(num_grad_steps, 'num_grad_steps')
  base.check_optimizer(optimizer)

  def refine(cost, samples, key, bounds):
    """`num_grad_steps` independent optimiser steps on each of the (S, H, A) samples."""
    value_and_grad = jax.vmap(jax.value_and_grad(cost))
    opt_update = jax.vmap(optimizer.update)

    def grad_step(carry, key):
      samples, opt_state, skipped = carry
      c, g = value_and_grad(samples)
      updates, new_opt_state = opt_update(g, opt_state, samples)
      new = optax.apply_updates(samples, updates)
      new = base.project(new + noise_std * jax.random.normal(key, new.shape), bounds)
      ok = jax.vmap(lambda c, g, a: jnp.isfinite(c) & base.all_finite((g, a)))(c, g, new)

      def keep(new, old):
        return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)

      carry = (keep(new, samples), jax.tree.map(keep, new_opt_state, opt_state),
               skipped + jnp.sum(~ok).astype(jnp.int32))
      return carry, None

    carry = (samples, jax.vmap(optimizer.init)(samples), jnp.array(0, jnp.int32))
    (samples, _, skipped), _ = jax.lax.scan(
        grad_step, carry, jax.random.split(key, num_grad_steps))
    return samples, skipped

  def update(cost: Cost, state: base.PlannerState, key: PRNGKey, bounds):
    k_sample, k_refine = jax.random.split(key)
    samples = sampling.sample_around(k_sample, state, num_samples, bounds, include_mean=True)
    refined, skipped = refine(cost, samples, k_refine, bounds)
    # Section 3 (GradCEM): elites are ranked and refitted from the refined samples.
    new_state, best, nonfinite = sampling.cem_refit(state, refined, jax.vmap(cost)(refined),
                                                    num_elites)
    return new_state, best, nonfinite + skipped

  return sampling.sampling_planner(horizon, action_size, num_samples, num_elites, num_iterations,
                                   init_std, action_low, action_high, update)
