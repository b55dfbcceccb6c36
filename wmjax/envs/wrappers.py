"""Env wrappers: frame skipping (model actions) and rendered pixel observations.

A wrapper is itself an `Env` for one instance; batching stays `jax.vmap` by the caller.
Attributes a wrapper does not define are looked up on the wrapped env.
"""

from typing import Any

import jax
import jax.numpy as jnp

from wmjax.envs import base
from wmjax.envs import execution
from wmjax.envs import render as rd


class Wrapper(base.Env):
  """Delegates every method and attribute to `env`."""

  def __init__(self, env: base.Env):
    self.env = env
    self.name = env.name
    self.state_size = env.state_size
    self.proprio_size = env.proprio_size
    self.action_size = env.action_size
    self.dt = env.dt

  def __getattr__(self, name: str) -> Any:
    # Only called when normal lookup fails: task-specific attributes pass through.
    if name == 'env':
      raise AttributeError(name)
    return getattr(self.env, name)

  @property
  def unwrapped(self) -> base.Env:
    env = self.env
    while isinstance(env, Wrapper):
      env = env.env
    return env

  def reset(self, key: jax.Array) -> base.State:
    return self.env.reset(key)

  def reset_to(self, state_vector: jax.Array) -> base.State:
    return self.env.reset_to(state_vector)

  def step(self, state: base.State, action: jax.Array) -> base.State:
    return self.env.step(state, action)

  def state_vector(self, state: base.State) -> jax.Array:
    return self.env.state_vector(state)

  def proprio(self, state: base.State) -> jax.Array:
    return self.env.proprio(state)

  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    return self.env.render(state_vector, size)

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return self.env.success(state_vector, goal)

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return self.env.distance(state_vector, goal)

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.env.sample_problem(key)

  @property
  def action_low(self) -> jax.Array:
    return self.env.action_low

  @property
  def action_high(self) -> jax.Array:
    return self.env.action_high

  @property
  def action_mean(self) -> jax.Array:
    return self.env.action_mean

  @property
  def action_std(self) -> jax.Array:
    return self.env.action_std

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.env!r})'


class FrameSkip(Wrapper):
  """One model action = `n` raw actions concatenated, executed in order.

  Put it inside `PixelObservation` (`PixelObservation(FrameSkip(env))`) so only the
  final state of a model action is rendered.

  `action_size` becomes n * A; bounds and action statistics are tiled n times, and
  `dt` is n times the raw step. `raw_action_size` keeps A.
  """

  def __init__(self, env: base.Env, n: int = 5):
    super().__init__(env)
    if int(n) != n or n < 1:
      raise ValueError(f'FrameSkip: n must be a positive int, got {n!r}.')
    self.frameskip = int(n)
    self.raw_action_size = env.action_size
    self.action_size = self.frameskip * env.action_size
    self.dt = self.frameskip * env.dt

  def step(self, state: base.State, action: jax.Array) -> base.State:
    """Runs the n raw actions of `action` (n * A,) in order (`execution.run_raw`); final
    state."""
    self.check_action(action)
    return execution.run_raw(self.env, state,
                             action.reshape(self.frameskip, self.raw_action_size))

  def _tile(self, x: jax.Array) -> jax.Array:
    return jnp.tile(x, self.frameskip)

  @property
  def action_low(self) -> jax.Array:
    return self._tile(self.env.action_low)

  @property
  def action_high(self) -> jax.Array:
    return self._tile(self.env.action_high)

  @property
  def action_mean(self) -> jax.Array:
    return self._tile(self.env.action_mean)

  @property
  def action_std(self) -> jax.Array:
    return self._tile(self.env.action_std)


class PixelObservation(Wrapper):
  """Adds obs['pixels']: (size, size, 3) uint8 rendered from the state vector."""

  def __init__(self, env: base.Env, size: int = 64):
    super().__init__(env)
    if int(size) != size or size < 1:
      raise ValueError(f'PixelObservation: size must be a positive int, got {size!r}.')
    self.image_size = int(size)

  def _with_pixels(self, state: base.State) -> base.State:
    img = self.env.render(self.env.state_vector(state), self.image_size)
    return state.replace(obs={**state.obs, 'pixels': rd.to_uint8(img)})

  def reset(self, key: jax.Array) -> base.State:
    return self._with_pixels(self.env.reset(key))

  def reset_to(self, state_vector: jax.Array) -> base.State:
    return self._with_pixels(self.env.reset_to(state_vector))

  def step(self, state: base.State, action: jax.Array) -> base.State:
    # The wrapped env never sees the pixels (its states keep their own structure).
    inner = state.replace(obs={k: v for k, v in state.obs.items() if k != 'pixels'})
    return self._with_pixels(self.env.step(inner, action))

