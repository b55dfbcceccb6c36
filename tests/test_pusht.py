"""PushT physics, geometry, success and problem sampling (PAPER.md section 5).

Compiles dominate: the scripted physics checks share ONE jitted batched rollout of fixed
shape (BATCH start vectors x STEPS actions).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from wmjax.data import policies
from wmjax.envs import pusht as pusht_lib
from wmjax.envs.pusht import PushT

BATCH, STEPS = 4, 48


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
  chex.clear_trace_counter()


@functools.lru_cache(maxsize=None)
def _env():
  return PushT()


@functools.lru_cache(maxsize=None)
def _rollout_fn():
  """(BATCH, 7) starts, (BATCH, STEPS, 2) actions -> (BATCH, STEPS + 1, 7) states."""
  env = _env()

  def one(sv, actions):
    def body(s, a):
      s = env.step(s, a)
      return s, env.state_vector(s)
    state = env.reset_to(sv)
    return jnp.concatenate([env.state_vector(state)[None],
                            jax.lax.scan(body, state, actions)[1]])

  return jax.jit(chex.assert_max_traces(lambda s, a: jax.vmap(one)(s, a), n=1))


def _run(starts, actions):
  """Pads to the shared (BATCH, STEPS) shape and runs the shared rollout."""
  starts = np.asarray(starts, np.float32)
  actions = np.asarray(actions, np.float32)
  n, t = actions.shape[:2]
  sv = np.concatenate([starts, np.repeat(starts[:1], BATCH - n, 0)])
  acts = np.zeros((BATCH, STEPS, 2), np.float32)
  acts[:n, :t] = actions
  return np.asarray(_rollout_fn()(jnp.asarray(sv), jnp.asarray(acts)))[:n, :t + 1]


def _gap(states):
  return np.asarray(jax.vmap(pusht_lib.pusher_gap)(jnp.asarray(states.reshape(-1, 7)))
                    ).reshape(states.shape[:-1])


def _sv(agent, block, angle=0.0):
  return np.array([*agent, *block, angle, 0.0, 0.0], np.float32)


# --- Physics. --------------------------------------------------------------------------


def test_block_static_when_not_pushed():
  # Pusher wandering in the top-left corner; block far away in the bottom-right.
  acts = 0.2 * np.asarray(jax.random.uniform(jax.random.key(0), (1, STEPS, 2), minval=-1.0))
  states = _run([_sv((60, 60), (380, 330), 0.7)], acts)[0]
  assert np.abs(states[:, :2] - states[0, :2]).max() > 5.0  # The pusher did move...
  assert _gap(states).min() > 50.0
  assert np.abs(states[:, 2:5] - states[:1, 2:5]).max() < 1e-4  # ...the block not.


# Pushes along a line through the block's pivot (45 px below the top-edge midpoint), so
# they translate the T without turning it. (start agent, action, expected direction,
# largest turn in rad, largest sideways drift of the top-edge midpoint in px).
_PUSHES = {
    # On the stem's left face, 5 px below the pivot so the disk clears the crossbar: it
    # turns the T a little (gym-pusht, same push: -0.18 rad, -7.6 px sideways).
    'right': ((256 - 15 - 15 - 10, 250), (0.5, 0.0), (1.0, 0.0), 0.25, 10.0),
    'down': ((256, 200 - 15 - 10), (0.0, 0.5), (0.0, 1.0), 0.01, 1.0),  # Crossbar's top.
    'up': ((256, 320 + 15 + 10), (0.0, -0.5), (0.0, -1.0), 0.01, 1.0),  # Stem's bottom.
}


def test_push_moves_block_along_push_then_it_stops():
  names = list(_PUSHES)
  starts = [_sv(_PUSHES[n][0], (256, 200)) for n in names]
  push, back, rest = 6, 2, 8
  acts = np.stack([np.concatenate([np.tile(_PUSHES[n][1], (push, 1)),
                                   -np.tile(_PUSHES[n][1], (back, 1)),
                                   np.zeros((rest, 2))]) for n in names])
  states = _run(starts, acts)
  gap = _gap(states)
  for i, name in enumerate(names):
    moved = states[i, push, 2:4] - states[i, 0, 2:4]
    direction = np.asarray(_PUSHES[name][2])
    assert moved @ direction > 60.0, (name, moved)  # ~20 px/step once in contact.
    assert abs(moved @ direction[::-1]) < _PUSHES[name][4], (name, moved)  # Sideways drift.
    assert abs(states[i, push, 4]) < _PUSHES[name][3], name  # Through the pivot: no turn.
    assert gap[i, :push + 1].min() > -3.0, name  # Contacts stay shallow.
    # Contact ends during the retreat; two steps later the block is at rest.
    last = int(np.nonzero(gap[i] < pusht_lib.PushT.contact_tolerance)[0].max())
    assert last <= push + 1, name
    after = states[i, last + 2:, 2:5]
    assert np.abs(np.diff(after, axis=0)).max() < 1e-2, (name, after)


def test_off_centre_push_turns_the_block():
  # Pushing the right end of the crossbar down turns the T clockwise on screen (+angle).
  states = _run([_sv((256 + 50, 200 - 15 - 10), (256, 200))], np.tile((0.0, 0.5), (1, 6, 1)))
  assert states[0, -1, 4] > 0.2
  assert states[0, -1, 3] > 205.0


def test_pd_control_reaches_relative_target():
  """Free pusher: matches the discrete PD law (target = agent + 100 a, k_p 100, k_v 20,
  10 x 0.01 s semi-implicit Euler substeps) and settles on a held target."""
  acts = np.zeros((12, 2), np.float32)
  acts[0] = (0.6, -0.3)
  acts[1] = (-0.2, 0.5)
  start = _sv((150, 300), (400, 100), 0.0)
  states = _run([start], acts[None])[0]
  x, v = start[:2].astype(np.float64), np.zeros(2)
  expect = [x.copy()]
  for a in acts:
    target = x + 100.0 * a
    for _ in range(10):
      v = v + 0.01 * (100.0 * (target - x) - 20.0 * v)
      x = x + 0.01 * v
    expect.append(x.copy())
  np.testing.assert_allclose(states[:, :2], np.array(expect), atol=0.05)
  # After the two moves, zero actions hold the position: it settles (critically damped).
  np.testing.assert_allclose(states[-1, 5:7], 0.0, atol=0.5)
  assert np.linalg.norm(states[-1, :2] - states[-2, :2]) < 0.1


# --- Geometry. -------------------------------------------------------------------------


def test_rendered_t_has_its_top_edge_midpoint_at_the_block_position():
  env = _env()
  img = np.asarray(env.render(jnp.asarray(_sv((60, 60), (256, 200))), 512))
  block = np.array([0.47, 0.53, 0.60])
  is_block = lambda x, y: np.allclose(img[y, x], block, atol=0.02)  # Row = y.
  assert is_block(256, 203) and not is_block(256, 196)  # Top edge at y = 200.
  assert is_block(313, 210) and not is_block(319, 210)  # Crossbar right end x = 316.
  assert is_block(262, 300) and not is_block(274, 300)  # Stem right face x = 271.
  assert is_block(256, 316) and not is_block(256, 324)  # Stem bottom y = 320.
  # A quarter turn maps the T's local +y (stem) to world -x.
  img = np.asarray(env.render(jnp.asarray(_sv((60, 60), (256, 200), np.pi / 2)), 512))
  assert is_block(180, 200) and not is_block(120, 200) and not is_block(256, 260)


def test_simulator_contacts_match_the_reported_pose():
  """MJX's pusher-block contact distance equals the gap computed from the state vector."""
  env = _env()
  model, mj_model = env._model, env._mj_model  # pylint: disable=protected-access
  geom = lambda name: mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_GEOM, name)
  pusher, block_geoms = geom('pusher'), jnp.array([geom('bar'), geom('stem')])
  key = jax.random.key(1)
  block = jnp.array([256.0, 200.0, 0.0])
  angles = jax.random.uniform(key, (8,), minval=-np.pi, maxval=np.pi)
  # Pusher centres 1-4 px deeper than touching (MJX reports distances of touching
  # contacts only), in the T's frame, around the whole outline.
  local = jnp.array([(0, -13), (73, 15), (45, 42), (27, 80), (0, 134), (-26, 100),
                     (-45, 43), (-72, 10)], jnp.float32)

  def contact_gap(angle, p):
    sv = jnp.concatenate([jnp.zeros(2), block[:2], angle[None], jnp.zeros(2)])
    sv = sv.at[:2].set(pusht_lib.to_world(sv, p))
    data = mjx.forward(model, env.reset_to(sv).data)
    c = data._impl.contact  # pylint: disable=protected-access
    mine = (c.geom[:, 0] == pusher) | (c.geom[:, 1] == pusher)
    other_is_block = jnp.isin(c.geom, block_geoms).any(-1)
    dist = jnp.where(mine & other_is_block, c.dist, jnp.inf).min() * 100.0
    return dist, pusht_lib.pusher_gap(sv)

  dist, gap = jax.jit(jax.vmap(contact_gap))(angles, local)
  np.testing.assert_allclose(gap, [-2, -2, -3, -3, -1, -4, -2, -3], atol=1e-3)
  np.testing.assert_allclose(dist, gap, atol=0.05)


# --- Success. --------------------------------------------------------------------------


def test_success_on_hand_built_states():
  env = _env()
  goal = jnp.asarray(_sv((100, 120), (256, 256), np.pi / 4))
  ok = goal.at[0].add(10.0).at[3].add(10.0).at[4].add(0.3).at[5].add(300.0)
  assert bool(env.success(ok, goal))  # 14 px, 0.3 rad < pi/9; velocity ignored.
  assert not bool(env.success(goal.at[1].add(21.0), goal))  # Agent 21 px off.
  assert not bool(env.success(goal.at[2].add(15.0).at[3].add(15.0), goal))  # 21.2 px.
  assert not bool(env.success(goal.at[4].add(0.36), goal))  # Angle just over pi/9.
  # Angle error wraps around +-pi.
  g = goal.at[4].set(np.pi - 0.1)
  assert bool(env.success(g.at[4].set(-np.pi + 0.1), g))
  assert bool(env.success(goal.at[4].add(2 * np.pi), goal))
  assert not bool(env.success(goal.at[4].add(np.pi), goal))
  assert float(env.distance(goal.at[4].add(2 * np.pi), goal)) == pytest.approx(0.0, abs=1e-3)


# --- Resets, long episodes, problems. --------------------------------------------------


def test_long_random_episode_jitted_vmapped_finite_and_inside():
  env = _env()
  reset = jax.jit(jax.vmap(env.reset))
  first = np.asarray(reset(jax.random.split(jax.random.key(2), BATCH)).obs['state'])
  # Resets: agent in [50, 450], block in [100, 400], no overlap, T inside the workspace.
  assert (first[:, :2] >= 50).all() and (first[:, :2] <= 450).all()
  assert (first[:, 2:4] >= 100).all() and (first[:, 2:4] <= 400).all()
  assert (_gap(first) > 0).all()
  # 4 x 48 = 192 random steps per instance (chained through reset_to).
  states, start = [], first
  for seed in range(4):
    acts = jax.random.uniform(jax.random.key(10 + seed), (BATCH, STEPS, 2), minval=-1.0)
    chunk = _run(start, acts)
    states.append(chunk[:, 1:])
    start = chunk[:, -1]
  states = np.concatenate(states, 1)
  assert np.isfinite(states).all()
  # The pusher is not held in (gym-pusht's kinematic agent passes the walls); the block is.
  corners = jax.vmap(lambda sv: pusht_lib.to_world(sv, jnp.asarray(pusht_lib.T_VERTICES)))(
      jnp.asarray(states.reshape(-1, 7)))
  assert float(corners.min()) > -10.0 and float(corners.max()) < 522.0
  assert (np.abs(states[..., 4]) <= np.pi).all()
  assert np.abs(states[:, -1, 2:4] - first[:, 2:4]).max() > 10.0  # Random play moved a block.


def test_sample_problem_starts_mid_trajectory_and_the_goal_moved():
  env = _env()
  keys = jax.random.split(jax.random.key(3), 16)
  start, goal = map(np.asarray, jax.jit(jax.vmap(env.sample_problem))(keys))
  assert np.isfinite(start).all() and np.isfinite(goal).all()
  assert (goal[:, 2:4] > 0).all() and (goal[:, 2:4] < 512).all()
  dist = np.asarray(jax.vmap(env.distance)(jnp.asarray(start), jnp.asarray(goal)))
  assert (dist > 20.0).all()  # The goal is not the start.
  assert np.median(np.linalg.norm(goal[:, 2:4] - start[:, 2:4], axis=-1)) > 20.0  # Pushed.
  # Mid-trajectory starts: the pusher is usually already at the block (measured ~75%).
  assert (_gap(start) < 20.0).mean() > 0.4


@pytest.mark.slow
def test_sample_problem_goal_is_25_expert_steps_along():
  env = _env()
  expert = policies.pusht_expert(env)

  def both(key):
    start, goal = env.sample_problem(key)
    # Replays the documented recipe: reset, the expert for 0..50 + 25 env steps.
    k_reset, k_init, k_roll, k_offset = jax.random.split(key, 4)
    state = env.reset(k_reset)
    pstate = expert.init(k_init, state)
    def body(c, k):
      s, p = c
      a, p = expert.act(p, s, k)
      s = env.step(s, a)
      return (s, p), env.state_vector(s)
    _, path = jax.lax.scan(body, (state, pstate), jax.random.split(k_roll, 75))
    path = jnp.concatenate([env.state_vector(state)[None], path])
    offset = jax.random.randint(k_offset, (), 0, 51)
    return start, goal, path[offset], path[offset + 25]

  start, goal, start2, goal2 = jax.jit(jax.vmap(both))(jax.random.split(jax.random.key(3), 4))
  np.testing.assert_allclose(start, start2, atol=1e-4)
  np.testing.assert_allclose(goal, goal2, atol=1e-3)
