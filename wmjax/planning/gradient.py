"""Gradient-based planning (GBP): any optax optimiser on the action sequence.

PAPER.md section 3: GD is `optax.sgd(1.0)` x 1000 steps (DINO-WM), the paper's MPC planner is
`optax.adam(0.2)` x 100 steps, open loop `optax.adam(0.3)` x 300; Gaussian noise (std 0.003) is
added after each step; no clipping by default.

Non-finite values (a cost that is NaN or infinite on part of the action space, e.g. a world model
driven far outside its data): the planner keeps the last iterate whose cost and gradient were
finite. A step that lands where the cost or gradient is non-finite is undone at the next step:
the actions and the optimiser state return to that last finite iterate and every later update is
scaled down by `nonfinite_shrink` (0.5: half the step, then a quarter, ...); a step whose update
itself is non-finite is dropped the same way. Each such step is counted in
info['num_nonfinite']. If the final iterate has a non-finite cost, the last finite one is
returned instead (also counted). So the returned actions are always finite and, whenever any
finite cost was seen, have a finite cost; only when the cost was non-finite everywhere the planner
looked are the initial actions returned with a non-finite info['cost']. `return_best=True`
returns the lowest-cost plan with a finite cost seen during the run.
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
    last_actions: (H, A) the last iterate whose cost and gradient were finite (the initial
      actions until one is seen): where a step into a non-finite region returns to.
    last_opt_state: the optimiser state at `last_actions`.
    last_cost: () the cost at `last_actions` (NaN until a finite one is seen).
    scale: () multiplier of the optimiser's updates; shrinks at every non-finite step.
    best_actions: (H, A) lowest finite-cost plan seen.
    best_cost: () its cost (+inf when none seen).
    num_nonfinite: () int32 undone or dropped steps.
  """

  actions: jax.Array
  opt_state: optax.OptState
  last_actions: jax.Array
  last_opt_state: optax.OptState
  last_cost: jax.Array
  scale: jax.Array
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
    nonfinite_shrink: float = 0.5,
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
    nonfinite_shrink: factor (data, in (0, 1)) applied to the step size each time a step lands
      where the cost or gradient is non-finite and is undone (see the module docstring).

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
      here = jnp.isfinite(c) & base.all_finite(g)  # The current iterate is usable.
      updates, opt_state = optimizer.update(g, carry.opt_state, carry.actions)
      updates = jax.tree.map(lambda u: carry.scale * u, updates)
      actions = optax.apply_updates(carry.actions, updates)
      actions = actions + noise_std * jax.random.normal(key, shape)  # Section 3: noise 0.003.
      actions = base.project(actions, bounds)
      ok = here & base.all_finite(actions)
      pick = lambda cond: (lambda a, b: jnp.where(cond, a, b))
      # The last finite iterate: this one if usable, else the one kept before.
      last_actions = pick(here)(carry.actions, carry.last_actions)
      last_opt_state = jax.tree.map(pick(here), carry.opt_state, carry.last_opt_state)
      # Not ok: go back to the last finite iterate (this one, if only its update failed) and
      # take smaller steps from there on.
      best_actions, best_cost = _keep_best(carry.actions, c, carry.best_actions, carry.best_cost)
      carry = GradientCarry(
          actions=pick(ok)(actions, last_actions),
          opt_state=jax.tree.map(pick(ok), opt_state, last_opt_state),
          last_actions=last_actions,
          last_opt_state=last_opt_state,
          last_cost=jnp.where(here, c, carry.last_cost),
          scale=jnp.where(ok, carry.scale, carry.scale * nonfinite_shrink),
          best_actions=best_actions,
          best_cost=best_cost,
          num_nonfinite=carry.num_nonfinite + (~ok).astype(jnp.int32))
      return carry, c

    with jax.named_scope('plan'):
      actions0 = state.mean.astype(jnp.float32)
      opt_state0 = optimizer.init(actions0)
      carry = GradientCarry(
          actions=actions0,
          opt_state=opt_state0,
          last_actions=actions0,
          last_opt_state=opt_state0,
          last_cost=jnp.array(jnp.nan, jnp.float32),
          scale=jnp.array(1.0, jnp.float32),
          best_actions=actions0,
          best_cost=jnp.array(jnp.inf, jnp.float32),
          num_nonfinite=jnp.array(0, jnp.int32))
      carry, history = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
      final_cost = cost(carry.actions)
      # The last step landed where the cost is non-finite: return the last finite iterate.
      back = ~jnp.isfinite(final_cost)
      last_actions = jnp.where(back, carry.last_actions, carry.actions)
      last_cost = jnp.where(back, carry.last_cost, final_cost)
      num_nonfinite = carry.num_nonfinite + back.astype(jnp.int32)
      if return_best:
        actions, out_cost = _keep_best(last_actions, last_cost, carry.best_actions,
                                       carry.best_cost)
        # No finite cost ever seen: fall back to the last plan and its cost.
        out_cost = jnp.where(jnp.isfinite(out_cost), out_cost, last_cost)
      else:
        actions, out_cost = last_actions, last_cost
      info = {'cost': out_cost, 'cost_history': history, 'num_nonfinite': num_nonfinite}
      return actions, state.replace(mean=actions), info

  def shift(state: base.PlannerState, num_executed: int, key: PRNGKey) -> base.PlannerState:
    n = base.check_num_executed(num_executed, horizon)
    # Section 3 (MPC): warm start = remaining actions + fresh N(0, init_std) ones.
    tail = init_std * jax.random.normal(key, (n, action_size))
    mean = base.project(base.shift_plan(state.mean, n, tail), bounds)
    return state.replace(mean=mean)

  return base.Planner(init=init, plan=plan, shift=shift)
