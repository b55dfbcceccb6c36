"""Executing plans in a simulator: the one path from normalised model actions to env steps.

A planner and a world model see *model actions*: `frameskip` raw env actions concatenated, in
units normalised by the dataset's statistics (PAPER.md section 2). Executing one takes the
`Normalizer` back to raw units and runs `frameskip` env steps (`run_raw`). Every consumer goes
through here: MPC episodes and the simulator-as-model cost (`wmjax.planning`), OWM's executed
windows (`wmjax.training.online`), the gap diagnostic and the planning videos, and the
`FrameSkip` wrapper. Clipping is the env's own option (Wall and PushT execute actions unclipped
unless built with `clip_actions=True`; PointMaze always clips); `executed_actions` tells what
an env actually executed.

Shapes are checked where a caller hands actions in (`execute_plans`, `FrameSkip.step`); the
inner functions trust them.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from wmjax.envs import base


@struct.dataclass
class Normalizer:
  """Dataset statistics mapping normalised model actions and proprio to raw units and back.

  Normalised = (raw - mean) / std, the action statistics tiled over the raw actions a model
  action concatenates.

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

  def _tiled(self, width: int) -> tuple[jax.Array, jax.Array]:
    a = self.action_mean.shape[-1]
    if width % a:
      raise ValueError(f'Action width {width} is not a multiple of the raw action size {a}.')
    return jnp.tile(self.action_mean, width // a), jnp.tile(self.action_std, width // a)

  def normalize_actions(self, actions: jax.Array) -> jax.Array:
    """Raw -> normalised actions (..., k*A) (k raw actions concatenated)."""
    mean, std = self._tiled(actions.shape[-1])
    return (actions - mean) / std

  def denormalize_actions(self, actions: jax.Array) -> jax.Array:
    """Normalised -> raw actions (..., k*A)."""
    mean, std = self._tiled(actions.shape[-1])
    return actions * std + mean

  def normalize_proprio(self, proprio: jax.Array) -> jax.Array:
    """(..., P) raw -> normalised."""
    return (proprio - self.proprio_mean) / self.proprio_std

  def denormalize_proprio(self, proprio: jax.Array) -> jax.Array:
    """(..., P) normalised -> raw."""
    return proprio * self.proprio_std + self.proprio_mean


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


def action_bounds(env: base.Env, normalizer: Normalizer,
                  frameskip: int) -> tuple[jax.Array, jax.Array]:
  """Normalised bounds of valid raw actions, tiled over frameskip: (low, high), each
  (frameskip*A,). Plans inside them are what the simulator executes unclipped."""
  low = (env.action_low - normalizer.action_mean) / normalizer.action_std
  high = (env.action_high - normalizer.action_mean) / normalizer.action_std
  return jnp.tile(low, frameskip), jnp.tile(high, frameskip)


def executed_actions(env: base.Env, normalizer: Normalizer, actions: jax.Array,
                     frameskip: int) -> jax.Array:
  """The normalised model actions (..., frameskip*A) the env executes for `actions`: clipped to
  the action bounds where the env clips (PointMaze; Wall and PushT with `clip_actions=True`),
  else as given."""
  if not getattr(env, 'clip_actions', False):
    return actions
  low, high = action_bounds(env, normalizer, frameskip)
  return jnp.clip(actions, low, high)


def run_raw(env: base.Env, state: base.State, raw: jax.Array) -> base.State:
  """One model action: the env steps through raw actions (n, A) in order; the final state."""
  return jax.lax.fori_loop(0, raw.shape[0], lambda i, s: env.step(s, raw[i]), state)


def execute_plan(env: base.Env, state: base.State, actions: jax.Array, normalizer: Normalizer,
                 frameskip: int, observe: Callable[[base.State], Any]) -> tuple[base.State, Any]:
  """Executes normalised model actions from `state` (one instance; jittable, differentiable).

  Args:
    env: the raw (not frame-skipped) env.
    state: the env state to start from.
    actions: (H, frameskip*A) normalised model actions.
    normalizer: maps them to raw env actions.
    frameskip: raw env steps per model action, static.
    observe: env state -> pytree, recorded after every model action.

  Returns:
    (final state, observe(state) after each model action stacked on a leading axis H).
  """

  def model_action(state, raw):  # raw: (frameskip, A)
    state = run_raw(env, state, raw)
    return state, observe(state)

  return jax.lax.scan(model_action, state, normalizer.raw_actions(actions, frameskip))


def execute_plans(env: base.Env, normalizer: Normalizer, init_states: jax.Array,
                  plans: jax.Array, frameskip: int) -> dict[str, jax.Array]:
  """Executes normalised model-action plans in the simulator from true states (batched).

  Args:
    env: the real simulator (raw, not frame-skipped).
    normalizer: maps normalised model actions to raw env actions and raw proprio to normalised.
    init_states: (B, S) state vectors to restart the simulator from (`env.reset_to`).
    plans: (B, H, frameskip*A) normalised model actions, executed as the env executes them.
    frameskip: raw env steps per model action, static.

  Returns:
    {'state': (B, H+1, S) raw, 'proprio': (B, H+1, P) normalised}: the executed trajectory at
    every model step, frame 0 being the restarted initial state.
  """
  if jnp.ndim(init_states) != 2 or init_states.shape[-1] != env.state_size:
    raise ValueError(f'init_states must be (B, {env.state_size}); got {jnp.shape(init_states)}.')
  width = frameskip * env.action_size
  if jnp.ndim(plans) != 3 or plans.shape[0] != init_states.shape[0] or plans.shape[2] != width:
    raise ValueError(f'plans must be ({init_states.shape[0]}, H, {width}) (frameskip * A); got '
                     f'{jnp.shape(plans)}.')

  def observe(state):
    return (env.state_vector(state).astype(jnp.float32),
            normalizer.normalize_proprio(env.proprio(state)).astype(jnp.float32))

  def one(init_state, plan):
    state0 = env.reset_to(init_state)
    _, (svs, props) = execute_plan(env, state0, plan, normalizer, frameskip, observe)
    sv0, p0 = observe(state0)
    return (jnp.concatenate([sv0[None], svs]), jnp.concatenate([p0[None], props]))

  with jax.named_scope('execute_plans'):
    states, proprio = jax.vmap(one)(init_states, plans)
  return {'state': states, 'proprio': proprio}
