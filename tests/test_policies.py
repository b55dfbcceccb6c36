"""Behaviour policies: the registry, bounds, jit/vmap, and the PushT expert's contact."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmjax import envs
from wmjax.data import policies
from wmjax.envs import pusht as pusht_lib

BATCH, STEPS = 4, 12
# Policies that every task supports; the task-specific ones are listed here.
SPECIFIC = {'pusht_expert': ('pusht',)}
GENERIC = tuple(n for n in policies.POLICIES if n not in SPECIFIC)


@functools.lru_cache(maxsize=None)
def _env(name):
  return envs.load(name)


def _act_only(env, policy, key):
  """Runs `act` STEPS times from a reset state (state-independent policies need no
  physics): (BATCH, STEPS, A) actions."""

  def one(k):
    k_reset, k_init, k_act = jax.random.split(k, 3)
    state = env.reset(k_reset)
    def body(p, kk):
      a, p = policy.act(p, state, kk)
      return p, a
    return jax.lax.scan(body, policy.init(k_init, state), jax.random.split(k_act, STEPS))[1]

  return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, BATCH)))


@pytest.mark.parametrize('task', envs.ALL_ENVS)
@pytest.mark.parametrize('name', GENERIC)
def test_generic_policies_jit_vmap_within_bounds(task, name):
  env = _env(task)
  actions = _act_only(env, policies.load_policy(name, env), jax.random.key(0))
  assert actions.shape == (BATCH, STEPS, env.action_size)
  assert np.isfinite(actions).all()
  assert (actions >= np.asarray(env.action_low)).all()
  assert (actions <= np.asarray(env.action_high)).all()
  assert actions.std() > 0.1  # Random, not constant.


def test_random_walk_holds_actions():
  env = _env('wall')
  held = _act_only(env, policies.load_policy('random_walk', env, max_hold=6),
                   jax.random.key(1))
  same = np.all(held[:, 1:] == held[:, :-1], axis=-1).mean()
  assert 0.5 < same < 0.95  # Expected 1 - 1 / mean hold (3.5) = 0.71.
  iid = _act_only(env, policies.load_policy('random_walk', env, max_hold=1),
                  jax.random.key(1))
  assert not np.any(np.all(iid[:, 1:] == iid[:, :-1], axis=-1))
  with pytest.raises(ValueError, match='max_hold'):
    policies.load_policy('random_walk', env, max_hold=0)


def test_unknown_policy_and_unsupported_task_raise():
  env = _env('wall')
  with pytest.raises(ValueError) as e:
    policies.load_policy('no_such_policy', env)
  for name in policies.POLICIES:
    assert name in str(e.value)
  for task in envs.ALL_ENVS:
    if task not in SPECIFIC['pusht_expert']:
      with pytest.raises(ValueError, match='pusht'):
        policies.load_policy('pusht_expert', _env(task))


def test_pusht_expert_makes_contact_and_moves_the_block():
  """8 episodes x 60 steps: most steps in contact, the T travels and turns."""
  env = _env('pusht')
  expert = policies.load_policy('pusht_expert', env)
  steps = 60

  def episode(key):
    k_reset, k_init, k_act = jax.random.split(key, 3)
    state = env.reset(k_reset)
    def body(c, k):
      s, p = c
      a, p = expert.act(p, s, k)
      s = env.step(s, a)
      return (s, p), (a, env.state_vector(s), s.metrics['contact'])
    _, out = jax.lax.scan(body, (state, expert.init(k_init, state)),
                          jax.random.split(k_act, steps))
    return (env.state_vector(state),) + out

  first, actions, states, contact = map(
      np.asarray, jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(2), 8)))
  assert actions.shape == (8, steps, 2) and np.isfinite(states).all()
  assert (np.abs(actions) <= 1.0).all()
  assert contact.mean() > 0.3  # Measured ~0.54 on 64 x 100 steps (0.41 on these 8 x 60).
  # The contact metric agrees with the geometry.
  gap = jax.vmap(pusht_lib.pusher_gap)(jnp.asarray(states.reshape(-1, 7)))
  np.testing.assert_array_equal(contact.reshape(-1), np.asarray(gap) < env.contact_tolerance)
  travel = np.linalg.norm(np.diff(np.concatenate([first[:, None], states], 1)[..., 2:4],
                                  axis=1), axis=-1).sum(1)
  turn = np.abs(pusht_lib.wrap_angle(states[:, -1, 4] - first[:, 4]))
  assert travel.mean() > 80.0  # px of block path per episode (measured ~320 in 100 steps).
  assert np.mean(turn) > 0.2
