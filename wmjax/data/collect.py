"""Batched rollouts of a behaviour policy: the offline data of PAPER.md section 5.

Trajectory i of a collection with master key `key` uses only `jax.random.fold_in(key, i)`
(split into reset, policy-init and per-step keys), so its content depends on neither the
batch size nor the number of trajectories collected: a 1,000-trajectory dataset is a
prefix of the 2,000-trajectory one with the same seed.

One jitted call simulates a batch: `vmap` over trajectories of a `lax.scan` over time.
The host loops over batches (padding the last to the same shape, so it compiles once)
and shows a tqdm bar.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from wmjax.envs import base


def rollout(env: base.Env, policy: Any, key: jax.Array,
            length: int) -> dict[str, jax.Array]:
  """One behaviour trajectory.

  Args:
    env: the task.
    policy: an object with `init(key, env_state) -> pstate` and
      `act(pstate, env_state, key) -> (raw_action (A,), pstate)`.
    key: the trajectory's key.
    length: T, env steps.

  Returns:
    {'states': (T+1, S), 'proprio': (T+1, P), 'actions': (T, A) executed (clipped) raw
    actions}; action t leads from states[t] to states[t+1].
  """
  k_reset, k_init, k_steps = jax.random.split(key, 3)
  state = env.reset(k_reset)
  pstate = policy.init(k_init, state)
  low, high = jnp.asarray(env.action_low), jnp.asarray(env.action_high)

  def step(carry, k):
    state, pstate = carry
    raw, pstate = policy.act(pstate, state, k)
    action = jnp.clip(raw, low, high)
    nxt = env.step(state, action)
    return (nxt, pstate), (env.state_vector(nxt), env.proprio(nxt), action)

  _, (states, proprio, actions) = jax.lax.scan(
      step, (state, pstate), jax.random.split(k_steps, length))
  return {
      'states': jnp.concatenate([env.state_vector(state)[None], states]).astype(jnp.float32),
      'proprio': jnp.concatenate([env.proprio(state)[None], proprio]).astype(jnp.float32),
      'actions': actions.astype(jnp.float32),
  }


def make_batch_rollout(env: base.Env, policy: Any,
                       length: int) -> Callable[[jax.Array, jax.Array], dict[str, jax.Array]]:
  """Returns jitted `fn(key, indices (B,) int32) -> dict of (B, ...)` arrays.

  Trajectory `indices[b]` uses `jax.random.fold_in(key, indices[b])`.
  """

  @jax.jit
  def fn(key, indices):
    with jax.named_scope('collect'):
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
      return jax.vmap(lambda k: rollout(env, policy, k, length))(keys)

  return fn


def collect(env: base.Env, policy: Any, key: jax.Array, num_trajectories: int, length: int,
            batch_size: int, progress: bool = True) -> dict[str, np.ndarray]:
  """Rolls out `num_trajectories` behaviour trajectories of `length` env steps.

  Args:
    env: the task.
    policy: behaviour policy (see `rollout`).
    key: master key; trajectory i uses `jax.random.fold_in(key, i)`.
    num_trajectories: N.
    length: T.
    batch_size: trajectories simulated per jitted call (capped at N).
    progress: show a tqdm bar.

  Returns:
    {'states': (N, T+1, S), 'proprio': (N, T+1, P), 'actions': (N, T, A)} float32 numpy.
  """
  if num_trajectories < 1 or length < 1 or batch_size < 1:
    raise ValueError('num_trajectories, length and batch_size must be positive; got '
                     f'{num_trajectories}, {length}, {batch_size}.')
  batch_size = min(batch_size, num_trajectories)
  fn = make_batch_rollout(env, policy, length)
  chunks = []
  bar = tqdm.tqdm(total=num_trajectories, unit='traj', desc=f'collect {env.name}',
                  disable=not progress)
  for start in range(0, num_trajectories, batch_size):
    count = min(batch_size, num_trajectories - start)
    # The last batch is padded with further indices so every call has the same shape.
    indices = jnp.arange(start, start + batch_size, dtype=jnp.int32)
    out = jax.device_get(fn(key, indices))
    chunks.append(jax.tree.map(lambda x, c=count: np.asarray(x[:c]), out))
    bar.update(count)
  bar.close()
  return {k: np.concatenate([c[k] for c in chunks]) for k in ('states', 'proprio', 'actions')}

