"""Gradient-based planning (GBP): any optax optimiser on the action sequence.

PAPER.md section 3: GD is `optax.sgd(1.0)` x 1000 steps (DINO-WM), the paper's MPC planner is
`optax.adam(0.2)` x 100 steps, open loop `optax.adam(0.3)` x 300; Gaussian noise (std 0.003) is
added after each step; no clipping by default.

Non-finite values: a step whose cost or gradient at the current actions is non-finite, or whose
update would produce non-finite actions, is skipped (actions and optimiser state unchanged, no
noise) and counted in info['num_nonfinite']. The returned actions are therefore always finite, but
with `return_best=False` they can sit where the cost is non-finite (info['cost'] says so);
`return_best=True` returns the lowest-cost plan with a finite cost seen during the run.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from wmjax.planning import base
from wmjax.types import Cost, PRNGKey


class GradientCarry(NamedTuple):
  """Loop carry of the gradient planner.

  Attributes:
    actions: (H, A) current plan.
    opt_state: optax state for `actions`.
    best_actions: (H, A) lowest finite-cost plan seen.
    best_cost: () its cost (+inf when none seen).
    num_nonfinite: () int32 skipped steps.
  """

  actions: jax.Array
  opt_state: optax.OptState
  best_actions: jax.Array
  best_cost: jax.Array
  num_nonfinite: jax.Array


def _keep_best(actions, c, best_actions, best_cost):
  better = jnp.isfinite(c) & (c < best_cost)
  return jnp.where(better, actions, best_actions), jnp.where(better, c, best_cost)


def gradient_planner(
    horizon: int,
    action_size: int,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    noise_std: float = 0.003,
    init_std: float = 1.0,
    action_low=None,
    action_high=None,
    return_best: bool = False,
) -> base.Planner:
  """Gradient planner: `num_steps` optimiser steps on the (H, A) action sequence.

  Args:
    horizon: H, static.
    action_size: A, static (model actions, e.g. frameskip * raw = 10).
    optimizer: any optax transformation, e.g. `optax.adam(0.2)` or `optax.sgd(1.0)`.
    num_steps: number of optimiser steps, static.
    noise_std: std of the Gaussian noise added to the actions after each step (data).
    init_std: std of the initial and warm-start-appended random actions (data).
    action_low, action_high: optional bounds (scalar, (A,) or (H, A)); when given, actions are
      projected onto them after each step (off by default, as in the paper).
    return_best: return the lowest finite-cost plan seen instead of the last one (paper: last).

  Returns:
    A `Planner`; its state's `mean` is the plan, `std` the std of appended actions.
  """
  base.check_positive_int(horizon, 'horizon')
  base.check_positive_int(action_size, 'action_size')
  base.check_positive_int(num_steps, 'num_steps')
  base.check_optimizer(optimizer)
  bounds = base.make_bounds(action_low, action_high, horizon, action_size)
  shape = (horizon, action_size)

  def init(key: PRNGKey, mean: Optional[jax.Array] = None) -> base.PlannerState:
    if mean is None:
      mean = init_std * jax.random.normal(key, shape)  # Section 3: init N(0, 1).
    else:
      base.check_plan_shape(mean, horizon, action_size, 'mean')
    mean = base.project(jnp.asarray(mean, jnp.float32), bounds)
    return base.PlannerState(mean=mean, std=jnp.full(shape, init_std, jnp.float32))

  def plan(cost: Cost, state: base.PlannerState, key: PRNGKey):
    base.check_plan_shape(state.mean, horizon, action_size, 'state.mean')
    base.check_cost(cost, horizon, action_size)
    value_and_grad = jax.value_and_grad(cost)

    def step(carry: GradientCarry, key):
      c, g = value_and_grad(carry.actions)
      updates, opt_state = optimizer.update(g, carry.opt_state, carry.actions)
      actions = optax.apply_updates(carry.actions, updates)
      actions = actions + noise_std * jax.random.normal(key, shape)  # Section 3: noise 0.003.
      actions = base.project(actions, bounds)
      ok = jnp.isfinite(c) & base.all_finite(g) & base.all_finite(actions)
      keep = lambda new, old: jnp.where(ok, new, old)
      best_actions, best_cost = _keep_best(carry.actions, c, carry.best_actions, carry.best_cost)
      carry = GradientCarry(
          actions=keep(actions, carry.actions),
          opt_state=jax.tree.map(keep, opt_state, carry.opt_state),
          best_actions=best_actions,
          best_cost=best_cost,
          num_nonfinite=carry.num_nonfinite + (~ok).astype(jnp.int32))
      return carry, c

    with jax.named_scope('plan'):
      actions0 = state.mean.astype(jnp.float32)
      carry = GradientCarry(
          actions=actions0,
          opt_state=optimizer.init(actions0),
          best_actions=actions0,
          best_cost=jnp.array(jnp.inf, jnp.float32),
          num_nonfinite=jnp.array(0, jnp.int32))
      carry, history = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
      final_cost = cost(carry.actions)
      if return_best:
        actions, out_cost = _keep_best(
            carry.actions, final_cost, carry.best_actions, carry.best_cost)
        # No finite cost ever seen: fall back to the last plan and its cost.
        out_cost = jnp.where(jnp.isfinite(out_cost), out_cost, final_cost)
      else:
        actions, out_cost = carry.actions, final_cost
      info = {'cost': out_cost, 'cost_history': history, 'num_nonfinite': carry.num_nonfinite}
      return actions, state.replace(mean=actions), info

  def shift(state: base.PlannerState, num_executed: int, key: PRNGKey) -> base.PlannerState:
    n = base.check_num_executed(num_executed, horizon)
    # Section 3 (MPC): warm start = remaining actions + fresh N(0, init_std) ones.
    tail = init_std * jax.random.normal(key, (n, action_size))
    mean = base.project(base.shift_plan(state.mean, n, tail), bounds)
    return state.replace(mean=mean)

  return base.Planner(init=init, plan=plan, shift=shift)
