"""Brax interoperability: our tasks under Brax's wrappers, and planners on a Brax env."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from limits import TIMEOUT_S

brax_base = pytest.importorskip('brax.envs.base')
from brax.envs.wrappers import training as brax_wrappers  # pylint: disable=g-import-not-at-top

from wmjax import envs  # pylint: disable=g-import-not-at-top
from wmjax import planning
from wmjax.envs import brax_compat
from wmjax.planning import mpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPISODE = 4


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_task_runs_under_brax_wrappers_in_jit_scan(name):
  task = envs.load(name)
  env = brax_compat.BraxEnv(task)
  s = task.state_size
  assert env.observation_size == 2 * s  # State, then goal.
  assert env.action_size == task.action_size
  # brax.envs.training.wrap's order: vmap inside, episodes, auto-reset outside.
  wrapped = brax_wrappers.AutoResetWrapper(
      brax_wrappers.EpisodeWrapper(brax_wrappers.VmapWrapper(env), EPISODE, action_repeat=1))
  batch, steps = 2, 2 * EPISODE + 1

  @jax.jit
  def run(keys):
    state = wrapped.reset(keys)

    def one(state, action):
      state = wrapped.step(state, action)
      return state, (state.reward, state.done, state.metrics['distance'], state.info['steps'])

    actions = jnp.full((steps, batch, env.action_size), 0.5)
    return state, jax.lax.scan(one, state, actions)

  first, (final, (reward, done, distance, count)) = run(
      jax.random.split(jax.random.PRNGKey(0), batch))  # Brax's wrappers take raw keys.
  assert first.obs.shape == (batch, 2 * s)
  assert {'goal', 'steps', 'truncation', 'first_pipeline_state', 'first_obs'} <= set(final.info)
  assert {'distance', 'success'} <= set(final.metrics)
  np.testing.assert_allclose(reward, -distance, rtol=1e-6)
  assert np.all(np.isfinite(reward)) and np.any(reward != 0.0)
  # Episodes end every EPISODE steps and restart from their first state (same goal).
  np.testing.assert_array_equal(done[:, 0], [0, 0, 0, 1, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(count[:, 0], [1, 2, 3, 4, 1, 2, 3, 4, 1])
  np.testing.assert_allclose(reward[EPISODE], reward[0], rtol=1e-5)


def test_step_keeps_info_and_metrics_and_rescales_actions():
  task = envs.load('wall')
  env = brax_compat.BraxEnv(task, goal_in_obs=False)
  state = env.reset(jax.random.key(1))
  state.info['mine'] = jnp.ones(3)
  state.metrics['count'] = jnp.zeros(())
  nxt = jax.jit(env.step)(state, jnp.ones((task.action_size,)))
  assert set(nxt.info) == {'goal', 'mine'} and set(nxt.metrics) == {'count', 'distance',
                                                                      'success'}
  assert env.observation_size == task.state_size
  raw = task.step(state.pipeline_state, task.action_high)  # +1 maps to the upper bound.
  np.testing.assert_allclose(nxt.obs, raw.obs['state'], rtol=1e-6)
  done = brax_compat.BraxEnv(task, done_on_success=True)
  start = done.reset(jax.random.key(2))
  at_goal = start.replace(pipeline_state=task.reset_to(start.info['goal']))
  assert float(done.step(at_goal, jnp.zeros((task.action_size,))).done) == 1.0


class Integrator(brax_base.Env):
  """A 2-D double integrator written against Brax's `Env` API in plain JAX (no physics
  pipeline): reward minus the distance to a target kept in `info`, with an int32 step counter
  and a PRNG key in the state to check the flattening."""

  def reset(self, rng):
    k_pos, k_target, k_keep = jax.random.split(rng, 3)
    pos = jax.random.uniform(k_pos, (2,), minval=-1.0, maxval=1.0)
    target = jax.random.uniform(k_target, (2,), minval=-1.0, maxval=1.0)
    ps = {'pos': pos, 'vel': jnp.zeros(2), 'count': jnp.zeros((), jnp.int32)}
    return brax_base.State(ps, self._obs(ps, target), -jnp.linalg.norm(pos - target),
                           jnp.zeros(()), {}, {'target': target, 'rng': k_keep,
                                               'flag': jnp.array(True)})

  def step(self, state, action):
    ps = state.pipeline_state
    vel = 0.8 * ps['vel'] + 0.2 * jnp.clip(action, -1.0, 1.0)
    ps = {'pos': ps['pos'] + 0.2 * vel, 'vel': vel, 'count': ps['count'] + 1}
    target = state.info['target']
    return state.replace(pipeline_state=ps, obs=self._obs(ps, target),
                         reward=-jnp.linalg.norm(ps['pos'] - target))

  def _obs(self, ps, target):
    return jnp.concatenate([ps['pos'], ps['vel'], target - ps['pos']])

  @property
  def observation_size(self):
    return 6

  @property
  def action_size(self):
    return 2

  @property
  def backend(self):
    return 'jax'


def _distance(state, goal):
  del goal  # Unused: the target is in the state.
  return jnp.linalg.norm(state.obs[-2:])


@pytest.mark.parametrize('key_fn', [jax.random.key, jax.random.PRNGKey])
def test_from_brax_state_vector_round_trip_is_exact(key_fn):
  env = brax_compat.FromBrax(Integrator(), distance=_distance)
  state = jax.jit(env.step)(env.reset(key_fn(3)), jnp.ones(2))
  sv = env.state_vector(state)
  assert sv.shape == (env.state_size,) and sv.dtype == jnp.float32
  back = jax.jit(env.reset_to)(sv)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(back.pipeline_state['count']) == 1


def test_planners_run_mpc_on_a_brax_env_through_its_true_dynamics():
  env = brax_compat.FromBrax(Integrator(), distance=_distance, success_threshold=0.15)
  problem = brax_compat.true_dynamics_problem(env)  # Cost: minus the reward of every step.
  horizon, batch, budget = 8, 6, 16
  inits, goals = jax.vmap(env.sample_problem)(jax.random.split(jax.random.key(0), batch))
  start = jax.vmap(env.distance)(inits, goals)
  planners = {
      'cem': (planning.cem(horizon, 2, num_samples=64, num_elites=8, num_iterations=4), 4),
      'adam': (planning.gradient_planner(horizon, 2, optax.adam(0.3), num_steps=20), 1),
  }
  for name, (planner, execute) in planners.items():
    episodes = jax.jit(lambda i, g, k, p=planner, e=execute: mpc.evaluate(
        env, p, problem.observe, problem.make_cost, problem.normalizer, i, g, k,
        num_replans=budget // e, execute=e, frameskip=1))(
            inits, goals, jax.random.split(jax.random.key(1), batch))
    assert episodes.states.shape == (batch, budget + 1, env.state_size), name
    assert np.all(np.asarray(episodes.final_distance) < np.asarray(start)), name
    assert int(episodes.success.sum()) >= batch - 1, (name, episodes.final_distance)


@pytest.mark.slow
def test_readme_brax_snippet_runs_as_pasted():
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  section = text[text.index('## Using wmjax with Brax'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  namespace = {}
  exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['episodes'].final_distance.shape == (8,)
  assert namespace['state'].obs.shape == (16, 4)


@pytest.mark.slow
def test_reacher_example_runs():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'examples', 'brax_reacher.py'), '--problems', '2',
       '--budget', '4', '--horizon', '4', '--cem', '16', '4', '2', '--adam_steps', '2'],
      capture_output=True, text=True, timeout=TIMEOUT_S, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'CEM   success' in out.stdout and 'Adam  success' in out.stdout, out.stdout
