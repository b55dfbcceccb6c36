"""Behaviour policies that generate the offline data (PAPER.md section 5).

A policy is a NamedTuple of two pure functions written for ONE instance (vmap to batch):

  init(key, env_state) -> policy_state
  act(policy_state, env_state, key) -> (raw_action (A,), policy_state)

`env_state` is the task's `wmjax.envs.base.State`; policies read `env_state.obs['state']`.
Raw actions lie within the task's action bounds. `load_policy(name, env)` is the static
registry:

  random        iid uniform actions in the bounds (the paper's PointMaze and Wall data).
  random_walk   uniform actions each held for a random 1..max_hold steps (better coverage).
  pusht_expert  scripted noisy pushing expert for PushT (stand-in for the paper's noisy
                replays of expert pushes); see `wmjax.envs.pusht_expert`, next to the task
                (whose evaluation problems it also generates).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from wmjax.envs import base
from wmjax.envs.base import Policy
from wmjax.envs.pusht_expert import pusht_expert


# --- random ----------------------------------------------------------------------------


def random(env: base.Env) -> Policy:
  """iid uniform raw actions in [action_low, action_high]."""
  low, high = env.action_low, env.action_high

  def init(key, env_state):
    del key, env_state  # Unused.
    return ()

  def act(pstate, env_state, key):
    del env_state  # Unused.
    return jax.random.uniform(key, low.shape, minval=low, maxval=high), pstate

  return Policy(init, act)


# --- random_walk -----------------------------------------------------------------------


class RandomWalkState(NamedTuple):
  action: jax.Array  # (A,) action being held.
  steps_left: jax.Array  # () int32 steps it is still held for.


def random_walk(env: base.Env, max_hold: int = 10) -> Policy:
  """Temporally correlated random actions: a uniform action held for a uniform random
  number of steps in 1..max_hold, then a fresh one. Covers more of the workspace than
  iid actions, whose effects average out."""
  if max_hold < 1:
    raise ValueError(f'random_walk: max_hold must be >= 1, got {max_hold}.')
  low, high = env.action_low, env.action_high

  def draw(key):
    k_a, k_n = jax.random.split(key)
    action = jax.random.uniform(k_a, low.shape, minval=low, maxval=high)
    return RandomWalkState(action, jax.random.randint(k_n, (), 1, max_hold + 1))

  def init(key, env_state):
    del env_state  # Unused.
    return draw(key)

  def act(pstate, env_state, key):
    del env_state  # Unused.
    fresh = draw(key)
    pstate = jax.tree.map(lambda f, o: jnp.where(pstate.steps_left <= 0, f, o), fresh, pstate)
    return pstate.action, pstate._replace(steps_left=pstate.steps_left - 1)

  return Policy(init, act)


# --- Registry --------------------------------------------------------------------------

POLICIES: dict[str, Callable[..., Policy]] = {
    'random': random,
    'random_walk': random_walk,
    'pusht_expert': pusht_expert,
}


def load_policy(name: str, env: base.Env, **kwargs) -> Policy:
  """Builds the named behaviour policy for `env` (keyword arguments go to its factory).

  Raises:
    ValueError: unknown name (the message lists the choices) or unsupported task.
  """
  if name not in POLICIES:
    raise ValueError(f'Unknown policy {name!r}; choose one of {sorted(POLICIES)}.')
  return POLICIES[name](env, **kwargs)
