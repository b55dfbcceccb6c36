"""Contract tests for every registered task, plus Wall / PointMaze physics checks.

Compiles are the cost here (an MJX step takes seconds to compile), so every task gets
ONE jitted batched rollout of fixed shape, built once per module and reused by the
contract and physics tests.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmjax import envs
from wmjax.envs import render as rd
from wmjax.envs import wall

SIZES = {'pusht': (7, 4), 'pointmaze': (4, 4), 'wall': (2, 2)}  # (S, P).
# A move of the agent that is far beyond the success radius / well visible in images.
FAR = {'pusht': 60.0, 'pointmaze': 1.0, 'wall': 10.0}
NEAR = {'pusht': 1.0, 'pointmaze': 0.1, 'wall': 1.0}
BATCH, STEPS, FRAMESKIP, IMAGE = 4, 4, 5, 24  # Shape of the shared rollout.


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
  # assert_max_traces counts by code location: start each test from zero.
  chex.clear_trace_counter()


@functools.lru_cache(maxsize=None)
def _env(name):
  return envs.load(name)


@functools.lru_cache(maxsize=None)
def _wrapped(name):
  return envs.PixelObservation(envs.FrameSkip(_env(name), FRAMESKIP), size=IMAGE)


@functools.lru_cache(maxsize=None)
def _rollout_fn(name):
  """The one jitted rollout per task: jit(vmap(scan(step))) under FrameSkip + pixels.

  (B, S) start vectors, (B, T, FRAMESKIP * A) model actions -> (first obs, obs) with
  leading axes (B,) and (B, T).
  """
  env = _wrapped(name)

  def rollout(starts, actions):
    def one(sv, acts):
      state = env.reset_to(sv)
      def body(s, a):
        s = env.step(s, a)
        return s, {**s.obs, 'reward': s.reward, 'done': s.done}
      return state.obs, jax.lax.scan(body, state, acts)[1]
    return jax.vmap(one)(starts, actions)

  return jax.jit(chex.assert_max_traces(rollout, n=1))


@functools.lru_cache(maxsize=None)
def _reset_fn(name):
  env = _env(name)
  return jax.jit(chex.assert_max_traces(lambda keys: jax.vmap(env.reset)(keys), n=1))


def _random_actions(env, key, shape):
  a = env.action_mean + env.action_std * jax.random.normal(key, shape + (env.action_size,))
  return jnp.clip(a, env.action_low, env.action_high)


def _starts(name, seed=0):
  return _reset_fn(name)(jax.random.split(jax.random.key(seed), BATCH)).obs['state']


# --- Registry. -------------------------------------------------------------------------


def test_registry_names_and_unknown_name():
  assert set(envs.ALL_ENVS) == set(SIZES)
  with pytest.raises(ValueError) as e:
    envs.load('no_such_task')
  for name in envs.ALL_ENVS:
    assert name in str(e.value)


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_sizes_and_action_stats(name):
  env = _env(name)
  assert isinstance(env, envs.Env) and env.name == name
  assert (env.state_size, env.proprio_size) == SIZES[name]
  assert env.action_size == 2 and env.dt > 0
  for v in (env.action_low, env.action_high, env.action_mean, env.action_std):
    assert v.shape == (2,)
  assert np.all(env.action_low < env.action_high) and np.all(env.action_std > 0)
  start, goal = jax.eval_shape(env.sample_problem, jax.random.key(0))
  assert start.shape == goal.shape == (env.state_size,)


# --- Contract: reset / step / shapes / recompilation. ----------------------------------


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_jitted_episode_contract(name):
  """Whole random episodes, FrameSkip + PixelObservation, vmapped over a batch."""
  env = _wrapped(name)
  assert env.action_size == FRAMESKIP * 2 and env.name == name
  assert env.action_std.shape == env.action_low.shape == (FRAMESKIP * 2,)
  s, p = SIZES[name]
  starts = _starts(name)
  assert starts.shape == (BATCH, s) and starts.dtype == jnp.float32
  fn = _rollout_fn(name)
  for seed in (1, 2):  # The second call must not retrace (assert_max_traces).
    acts = _random_actions(env, jax.random.key(seed), (BATCH, STEPS))
    first, obs = fn(starts, acts)
  assert first['pixels'].shape == (BATCH, IMAGE, IMAGE, 3)
  np.testing.assert_allclose(first['state'], starts, rtol=1e-5, atol=1e-4)
  assert obs['state'].shape == (BATCH, STEPS, s) and obs['state'].dtype == jnp.float32
  assert obs['proprio'].shape == (BATCH, STEPS, p)
  assert obs['pixels'].shape == (BATCH, STEPS, IMAGE, IMAGE, 3)
  assert obs['pixels'].dtype == jnp.uint8
  assert obs['reward'].shape == obs['done'].shape == (BATCH, STEPS)
  assert np.all(np.isfinite(obs['state'])) and np.all(np.isfinite(obs['proprio']))
  assert float(jnp.abs(obs['state'][:, -1] - starts).max()) > 1e-3  # Something moved.
  # The pixels are the render of the state.
  expect = rd.to_uint8(env.render(obs['state'][0, -1], IMAGE))
  np.testing.assert_array_equal(obs['pixels'][0, -1], expect)


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_wrong_action_shape_raises(name):
  env = _env(name)
  state = jax.eval_shape(env.reset, jax.random.key(0))
  with pytest.raises(ValueError, match='shape'):
    jax.eval_shape(env.step, state, jnp.zeros((3,)))
  skip = envs.FrameSkip(env, 5)
  with pytest.raises(ValueError, match='shape'):
    jax.eval_shape(skip.step, state, jnp.zeros((2,)))
  with pytest.raises(ValueError, match='shape'):
    jax.eval_shape(env.reset_to, jnp.zeros((env.state_size + 1,)))


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_reset_to_round_trip(name):
  env = _env(name)
  starts = np.asarray(_starts(name, seed=3))
  back = jax.vmap(lambda sv: env.state_vector(env.reset_to(sv)))(starts)
  np.testing.assert_allclose(back, starts, rtol=1e-5, atol=1e-4)
  proprio = jax.vmap(lambda sv: env.proprio(env.reset_to(sv)))(starts)
  assert proprio.shape == (BATCH, env.proprio_size)


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_success_on_hand_built_states(name):
  env = _env(name)
  goal = _starts(name, seed=4)[0]
  near = goal.at[0].add(NEAR[name])
  far = goal.at[0].add(FAR[name])
  assert bool(env.success(goal, goal)) and bool(env.success(near, goal))
  assert not bool(env.success(far, goal))
  assert float(env.distance(goal, goal)) == pytest.approx(0.0, abs=1e-5)
  assert float(env.distance(far, goal)) > float(env.distance(near, goal)) > 0


@pytest.mark.parametrize('name', envs.ALL_ENVS)
def test_render_shape_range_and_motion(name):
  env = _env(name)
  sv = _starts(name, seed=5)[0]
  moved = sv.at[0].add(FAR[name])
  for size in (32, 48):
    img = jax.jit(env.render, static_argnums=1)(sv, size)
    assert img.shape == (size, size, 3) and img.dtype == jnp.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    other = jax.jit(env.render, static_argnums=1)(moved, size)
    assert float(jnp.abs(img - other).max()) > 0.3  # The agent moved in the image.
  u8 = rd.to_uint8(img)
  assert u8.dtype == jnp.uint8 and u8.shape == img.shape


# --- Wrappers. -------------------------------------------------------------------------


def test_frameskip_equals_raw_steps_and_passthrough():
  raw = _env('wall')
  skip = envs.FrameSkip(raw, 5)
  assert skip.frameskip == 5 and skip.dt == 5 * raw.dt
  assert skip.unwrapped is raw
  maze = envs.PixelObservation(envs.FrameSkip(_env('pointmaze'), 5), 16)
  assert maze.layout == _env('pointmaze').layout and maze.substeps == 5  # Passthrough.
  assert maze.unwrapped is _env('pointmaze')
  state = raw.reset(jax.random.key(0))
  acts = jax.random.uniform(jax.random.key(1), (5, 2), minval=-1, maxval=1)
  raw_step = jax.jit(raw.step)
  expect = state
  for a in acts:
    expect = raw_step(expect, a)
  got = jax.jit(skip.step)(state, acts.reshape(-1))
  np.testing.assert_allclose(got.obs['state'], expect.obs['state'], rtol=1e-6)
  np.testing.assert_allclose(skip.action_low, -np.ones(10))
  with pytest.raises(ValueError):
    envs.FrameSkip(raw, 0)


# --- Wall physics (paper section 5). ------------------------------------------------------


def _in_wall(p):
  x, y = p[..., 0], p[..., 1]
  return (x > 29.0) & (x < 35.0) & ((y < 26.0) | (y > 34.0))


def test_wall_is_impassable_except_through_the_door():
  env = _env('wall')

  @jax.jit
  def pushes(key):
    k0, k1 = jax.random.split(key)
    starts = jax.vmap(env.reset)(jax.random.split(k0, 256)).data
    # Biased toward the wall: push toward x = 32 with noise.
    noise = jax.random.uniform(k1, (256, 200, 2), minval=-1.0, maxval=1.0)
    toward = jnp.sign(32.0 - starts[:, None, 0:1]) * jnp.array([1.0, 0.0])
    acts = jnp.clip(0.6 * toward + noise, -1.0, 1.0)

    def walk(p, a_seq):
      def body(q, a):
        q = env.step(env.reset_to(q), a).data
        return q, q
      return jax.lax.scan(body, p, a_seq)[1]

    return starts, jax.vmap(walk)(starts, acts)

  starts, paths = pushes(jax.random.key(0))
  assert np.all(np.isfinite(paths))
  assert not np.any(_in_wall(paths))
  assert np.all((paths >= 4.0) & (paths <= 60.0))
  # Every room change happened inside the door band.
  side = np.sign(paths[..., 0] - 32.0)
  prev = np.concatenate([np.sign(starts[:, None, 0] - 32.0), side[:, :-1]], 1)
  changed = (side != prev) & (side != 0) & (prev != 0)
  assert np.all((paths[..., 1][changed] >= 26.0) & (paths[..., 1][changed] <= 34.0))
  # Walking straight through the door works.
  state = env.reset_to(jnp.array([20.0, 30.0]))
  for _ in range(10):
    state = env.step(state, jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(state.data, [40.0, 30.0])


def test_wall_blocked_moves_follow_the_reference_rule():
  env = _env('wall')
  step = jax.jit(lambda p, a: env.step(env.reset_to(p), a).data)
  # DINO-WM's check_wall_intersect, worked by hand: the crossing point, then 0.5 px back from
  # the face and 0.5 px along it (+y on x faces, +x on y faces).
  cases = [
      ((28.0, 20.0), (1.0, 0.0), (28.5, 20.5)),     # The wall's left face.
      ((36.0, 40.0), (-1.0, 0.5), (35.5, 41.0)),    # Its right face, hit at y = 40.5.
      ((59.0, 30.0), (1.0, 0.0), (59.5, 30.5)),     # The right border.
      ((20.0, 10.0), (10.0, 0.0), (28.5, 10.5)),    # A long move stops at the first face.
      ((30.0, 27.0), (0.5, -1.0), (31.0, 26.5)),    # Leaving the door through its floor.
      ((25.0, 30.0), (10.0, -5.0), (33.5, 26.5)),   # Crossing the floor's line inside the
                                                    # wall's x range: back into the door.
      ((10.0, 10.0), (-5.0, -1.0), (4.5, 9.3)),     # The left border, met at y = 8.8.
      ((59.8, 5.0), (0.05, -1.0), (59.7, 4.5)),     # The top border, pushed past the right
                                                    # one by the offset: 0.3 px in.
  ]
  for p, a, want in cases:
    np.testing.assert_allclose(step(jnp.array(p), jnp.array(a)), want, atol=1e-5,
                               err_msg=f'{p} + 2 * {a}')
  # Pushed into the wall, the dot creeps along it (+0.5 px in y per blocked step).
  state = env.reset_to(jnp.array([28.5, 10.0]))
  for _ in range(10):
    state = env.step(state, jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(state.data, [28.5, 15.0], atol=1e-5)
  # Actions are executed unclipped, as DINO-WM's DotWall does: a = (3, 0) moves 6 px.
  np.testing.assert_allclose(step(jnp.array([10.0, 10.0]), jnp.array([5.0, -0.5])), [20.0, 9.0])
  np.testing.assert_allclose(step(jnp.array([10.0, 40.0]), jnp.array([3.0, 0.0])), [16.0, 40.0])
  clipped = envs.load('wall', clip_actions=True)
  np.testing.assert_allclose(clipped.step(clipped.reset_to(jnp.array([10.0, 10.0])),
                                          jnp.array([5.0, -0.5])).data, [12.0, 9.0])


def test_wall_move_matches_the_branchwise_reference_rule():
  """The vectorised `move` equals `move_numpy`, the reference's branches in its order, on
  starts everywhere in the free space and actions up to ~20 px long."""
  rng = np.random.default_rng(0)
  pos = rng.uniform(4.2, 59.8, (3000, 2))
  pos = pos[~_in_wall(pos)]
  acts = np.concatenate([rng.normal(0.0, 1.0, (len(pos) // 2, 2)),
                         rng.normal(0.0, 6.0, (len(pos) - len(pos) // 2, 2))])
  got = np.asarray(jax.jit(jax.vmap(wall.move))(jnp.asarray(pos, jnp.float32),
                                                jnp.asarray(acts, jnp.float32)))
  want = np.stack([wall.move_numpy(p, a) for p, a in zip(pos, acts)])
  blocked = np.abs(want - (pos + 2.0 * acts)).max(1) > 1e-6
  assert blocked.mean() > 0.2  # The comparison exercises the collision rule.
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_wall_reference_bugs_are_fixed():
  env = _env('wall')
  step = jax.jit(lambda p, a: env.step(env.reset_to(p), a).data)
  # A purely vertical move into a border: the reference returned NaN (a 0/0 line fit); here
  # the true crossing point with the reference's offsets.
  for y, a in ((4.5, -1.0), (59.5, 1.0)):
    out = step(jnp.array([10.0, y]), jnp.array([0.0, a]))
    np.testing.assert_allclose(out, [10.5, 4.5 if a < 0 else 59.5])
  # A purely vertical move inside the door column must not enter the wall.
  np.testing.assert_allclose(step(jnp.array([32.0, 33.0]), jnp.array([0.0, 1.0])), [32.5, 33.5])
  np.testing.assert_allclose(step(jnp.array([30.0, 27.0]), jnp.array([0.0, -1.0])), [30.5, 26.5])
  # Gradients stay finite where a move is blocked.
  g = jax.grad(lambda a: env.step(env.reset_to(jnp.array([10.0, 4.0])), a).data.sum())(
      jnp.array([0.0, -0.5]))
  assert np.all(np.isfinite(g))


def test_wall_problems_and_resets_are_in_the_rooms():
  env = _env('wall')
  keys = jax.random.split(jax.random.key(0), 200)
  starts, goals = jax.jit(jax.vmap(env.sample_problem))(keys)
  assert np.all(np.sign(starts[:, 0] - 32.0) == -np.sign(goals[:, 0] - 32.0))
  assert 0.3 < float(np.mean(starts[:, 0] < 32.0)) < 0.7
  resets = jax.jit(jax.vmap(env.reset))(keys).data
  assert not np.any(_in_wall(resets)) and not np.any((resets[:, 0] >= 29) & (resets[:, 0] <= 35))
  # The dot is drawn where the state says (red pixel at the dot, reference 65 px grid).
  img = np.asarray(env.render(jnp.array([20.0, 40.0]), 65))
  np.testing.assert_allclose(img[40, 20], [1.0, 0.0, 0.0], atol=1e-4)
  assert np.all(img[10, 32] == 0.0) and np.all(img[30, 32] == 1.0)  # Wall, door.


# --- PointMaze physics (paper section 5). -------------------------------------------------


def test_maze_walls_hold_and_velocity_is_clipped():
  from wmjax.envs import pointmaze  # pylint: disable=g-import-not-at-top
  env = _env('pointmaze')
  fn = _rollout_fn('pointmaze')
  # Corridor cells (1, 1), (1, 2), (3, 1), (1, 3): push into the left, top, inner and
  # right walls, then into the opposite one; full force for 5 x 20 env steps.
  starts = jnp.array([[0.8, 0.8, 0.0, 0.0], [0.8, 1.8, 0.0, 0.0],
                      [2.8, 0.8, 0.0, 0.0], [0.8, 2.8, 0.0, 0.0]])
  pushes = jnp.array([[0.0, -1.0], [-1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
  acts = jnp.broadcast_to(jnp.tile(pushes, FRAMESKIP)[:, None], (BATCH, STEPS, 2 * FRAMESKIP))
  paths = []
  sv = starts
  for _ in range(5):
    states = fn(sv, acts)[1]['state']
    paths.append(states)
    sv = states[:, -1]
  paths = np.concatenate(paths, 1)
  dist = jax.vmap(jax.vmap(functools.partial(pointmaze.wall_distance, env.layout)))(
      paths[..., :2])
  # The ball centre stays a radius away from every wall (tiny solver penetration).
  assert float(dist.min()) > pointmaze.BALL_RADIUS - 0.02
  # The pushes end pressed against the walls, at rest.
  assert float(np.abs(dist[:, -1] - pointmaze.BALL_RADIUS).max()) < 0.02
  # Velocity is clipped to 5 at the start of every env step: from 40, one model action
  # of 5 env steps with no force leaves 5 minus the damping loss (~5%).
  fast = starts.at[:, 2:].set(0.0).at[1, 3].set(40.0)
  vel = fn(fast, jnp.zeros_like(acts))[1]['state'][1, 0, 3]
  assert 4.0 < float(vel) <= 5.0


def test_maze_problems_are_in_the_corridors():
  from wmjax.envs import pointmaze  # pylint: disable=g-import-not-at-top
  env = _env('pointmaze')
  keys = jax.random.split(jax.random.key(0), 200)
  starts, goals = jax.jit(jax.vmap(env.sample_problem))(keys)
  dist = jax.vmap(functools.partial(pointmaze.wall_distance, env.layout))
  for sv in (starts, goals):
    assert float(dist(sv[:, :2]).min()) >= pointmaze.SAMPLE_CLEARANCE - 1e-6
    # DINO-WM's sampler: velocities uniform in +-5.226 per axis.
    assert np.abs(sv[:, 2:]).max() <= pointmaze.EVAL_MAX_SPEED
    assert np.abs(sv[:, 2:]).mean() > 0.4 * pointmaze.EVAL_MAX_SPEED
  # Start and goal are independent: some pairs start close (the reference has no minimum).
  sep = np.linalg.norm(starts[:, :2] - goals[:, :2], axis=-1)
  assert sep.min() < 0.5 < sep.max()
  # All seven corridor cells are used.
  cells = {tuple(c) for c in np.floor(np.asarray(starts[:, :2]) + 1.2 - 0.5).astype(int)}
  assert len(cells) == 7
