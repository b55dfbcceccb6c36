"""Online World Modeling (PAPER.md section 4): planner-induced windows (the replay buffer they go
into: tests/test_replay.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmjax import data as data_lib
from wmjax import envs
from wmjax import models
from wmjax import training
from wmjax.data import policies
from wmjax.data import replay
from wmjax.envs import execution
from wmjax.training import online

FS, H, NUM_HIST, M, T = 5, 5, 1, 4, 30
TINY_PREDICTOR = dict(depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.0)


@pytest.fixture(scope='module')
def setup():
  env = envs.load('wall')
  raw = data_lib.collect(env, policies.random(env), jax.random.key(0), num_trajectories=3,
                         length=T, batch_size=3, progress=False)
  stats_d = data_lib.compute_stats(raw['states'], raw['proprio'], raw['actions'])
  stats = data_lib.Stats(*(jnp.asarray(stats_d[f], jnp.float32) for f in data_lib.Stats._fields))
  arrays = data_lib.WindowArrays(jnp.asarray(raw['states']), jnp.asarray(raw['proprio']),
                                 jnp.asarray(raw['actions']), stats)
  model = models.make_world_model(dict(
      encoder='identity', state_dim=env.state_size, proprio_dim=env.proprio_size,
      action_dim=FS * env.action_size, num_hist=NUM_HIST, image_size=8,
      predictor=dict(TINY_PREDICTOR)))
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = jax.jit(lambda k: model.init(k, obs))(jax.random.key(1))
  planner = online.owm_planner(H, FS * env.action_size, num_steps=20)
  collect = jax.jit(lambda params, arrays, key: online.collect_windows(
      env, model, params, stats, arrays, key, planner=planner, num_segments=M, goal_horizon=3,
      num_hist=NUM_HIST, frameskip=FS))
  windows, info = collect(params, arrays, jax.random.key(2))
  return dict(env=env, stats=stats, arrays=arrays, model=model, params=params, windows=windows,
              info=info, replay=_replayer(env, stats))


def _replayer(env, stats):
  """Independent replay, jitted once: (state0 (S,), normalised model actions (K, FS*A)) ->
  ((K+1, S) states, (K+1, P) normalised proprio) at every model step."""
  normalizer = execution.normalizer_from_stats(stats)

  @jax.jit
  def run(state0, actions):
    raw = normalizer.denormalize_actions(actions).reshape(-1, env.action_size)

    def step(s, a):
      s = env.step(s, a)
      return s, (env.state_vector(s), env.proprio(s))

    s0 = env.reset_to(state0)
    _, (svs, props) = jax.lax.scan(step, s0, raw)
    svs = jnp.concatenate([env.state_vector(s0)[None], svs])[::FS]
    props = jnp.concatenate([env.proprio(s0)[None], props])[::FS]
    return svs, normalizer.normalize_proprio(props)

  return run


def test_windows_have_loader_layout(setup):
  w, info, env = setup['windows'], setup['info'], setup['env']
  n = M * (H - NUM_HIST + 1)
  assert w['state'].shape == (n, NUM_HIST + 1, env.state_size)
  assert w['proprio'].shape == (n, NUM_HIST + 1, env.proprio_size)
  assert w['actions'].shape == (n, NUM_HIST, FS * env.action_size)
  offline = data_lib.sample_windows(setup['arrays'], jax.random.key(0), 2, NUM_HIST, FS)
  assert sorted(w) == sorted(offline)
  for k in w:
    assert w[k].dtype == offline[k].dtype, k
  for k in ('goal_distance', 'plan_cost', 'start_distance'):
    assert info[k].shape == (M,)
    assert bool(jnp.all(jnp.isfinite(info[k]))), k


def test_windows_are_physically_consistent(setup):
  w, replay = setup['windows'], setup['replay']
  for i in range(w['state'].shape[0]):
    states, proprio = replay(w['state'][i, 0], w['actions'][i])
    np.testing.assert_allclose(w['state'][i], states, atol=1e-4)
    np.testing.assert_allclose(w['proprio'][i], proprio, atol=1e-4)


def test_windows_use_only_the_true_initial_state(setup):
  w, info, env, arrays = (setup[k] for k in ('windows', 'info', 'env', 'arrays'))
  per = H - NUM_HIST + 1
  assert per == H  # NUM_HIST = 1: window j of a segment holds frames j and j+1.
  spliced = 0
  for m in range(M):
    traj_states = jnp.concatenate([w['state'][m * per:(m + 1) * per, 0],
                                   w['state'][(m + 1) * per - 1, 1:]])  # (H+1, S)
    actions = w['actions'][m * per:(m + 1) * per, 0]                    # (H, FS*A)
    np.testing.assert_array_equal(actions, info['plans'][m])  # the planner's actions, unclipped
    t, s = int(info['traj'][m]), int(info['start'][m])
    # Frame 0 is the dataset segment's true initial state; the goal is 3 model steps later.
    np.testing.assert_array_equal(traj_states[0], arrays.states[t, s])
    np.testing.assert_array_equal(info['goal_state'][m], arrays.states[t, s + 3 * FS])
    # Every later frame is the simulator's rollout of the plan from that state.
    sim, _ = setup['replay'](arrays.states[t, s], info['plans'][m])
    np.testing.assert_allclose(traj_states, sim, atol=1e-4)
    dataset = arrays.states[t, s:s + H * FS + 1:FS]
    n = min(dataset.shape[0], H + 1)
    spliced += int(np.allclose(traj_states[1:n], dataset[1:n], atol=1e-4))
    np.testing.assert_allclose(info['goal_distance'][m],
                               env.distance(traj_states[-1], info['goal_state'][m]), rtol=1e-5)
  assert spliced == 0  # The executed frames are not the dataset's frames.


def test_owm_windows_train_with_the_ordinary_loss(setup):
  model, params, w, arrays = setup['model'], setup['params'], setup['windows'], setup['arrays']
  buf = replay.insert(replay.init_buffer(jax.tree.map(lambda x: x[0], w), 64), w)
  batch = replay.mix_batches(
      data_lib.sample_windows(arrays, jax.random.key(3), 4, NUM_HIST, FS),
      replay.sample(buf, jax.random.key(4), 4))
  loss_fn = jax.jit(training.teacher_forcing_loss(model, deterministic=True))
  loss, _ = loss_fn(*training.split_params(params), batch, jax.random.key(0))
  assert np.isfinite(float(loss))


def test_goal_horizon_and_segment_checks(setup):
  args = tuple(setup[k] for k in ('env', 'model', 'params', 'stats', 'arrays'))
  kw = dict(num_segments=2, num_hist=NUM_HIST, frameskip=FS,
            planner=online.owm_planner(H, FS * setup['env'].action_size, num_steps=2))
  with pytest.raises(ValueError, match="OWM goal horizon 6 .*longer than the planner's horizon"):
    online.collect_windows(*args, jax.random.key(0), goal_horizon=6, **kw)
  with pytest.raises(ValueError, match='OWM goal horizon 0'):
    online.collect_windows(*args, jax.random.key(0), goal_horizon=0, **kw)
  short = setup['arrays']._replace(states=setup['arrays'].states[:, :11])
  with pytest.raises(ValueError, match='do not fit the dataset'):
    online.collect_windows(*args[:4], short, jax.random.key(0), goal_horizon=3, **kw)
  with pytest.raises(ValueError, match='num_hist'):
    online.collect_windows(*args, jax.random.key(0), goal_horizon=2,
                           **dict(kw, num_hist=H + 1))


def test_trajectory_windows_never_cross_trajectories():
  b, h, nh = 2, 4, 2
  t = jnp.arange(h + 1, dtype=jnp.float32)
  traj = {'state': (100.0 * jnp.arange(b)[:, None] + t)[..., None],        # (B, H+1, 1)
          'proprio': -(100.0 * jnp.arange(b)[:, None] + t)[..., None]}
  actions = (100.0 * jnp.arange(b)[:, None] + t[:-1])[..., None].repeat(3, -1)  # (B, H, 3)
  w = online.trajectory_windows(traj, actions, nh)
  per = h - nh + 1
  assert w['state'].shape == (b * per, nh + 1, 1)
  assert w['actions'].shape == (b * per, nh, 3)
  for i in range(b * per):
    tb, j = divmod(i, per)
    np.testing.assert_array_equal(w['state'][i, :, 0], 100.0 * tb + j + jnp.arange(nh + 1))
    np.testing.assert_array_equal(w['proprio'][i, :, 0], -w['state'][i, :, 0])
    np.testing.assert_array_equal(w['actions'][i, :, 0], 100.0 * tb + j + jnp.arange(nh))
  with pytest.raises(ValueError, match='num_hist'):
    online.trajectory_windows(traj, actions, h + 1)


def test_execute_plans_shapes_and_errors():
  env = envs.load('wall')
  norm = execution.Normalizer(action_mean=jnp.zeros(2), action_std=jnp.ones(2),
                              proprio_mean=jnp.ones(2), proprio_std=2 * jnp.ones(2))
  init = jnp.array([[10.0, 30.0], [50.0, 50.0]])  # row 0 passes the door
  plans = jnp.zeros((2, 3, FS * 2)).at[0, :, 0::2].set(1.0)  # instance 0 moves right
  out = execution.execute_plans(env, norm, init, plans, FS)
  assert out['state'].shape == (2, 4, 2) and out['proprio'].shape == (2, 4, 2)
  np.testing.assert_allclose(out['state'][0, :, 0], 10.0 + 2.0 * FS * jnp.arange(4))
  np.testing.assert_allclose(out['state'][1], jnp.broadcast_to(init[1], (4, 2)))
  np.testing.assert_allclose(out['proprio'], (out['state'] - 1.0) / 2.0)  # wall: proprio = xy
  with pytest.raises(ValueError, match='init_states'):
    execution.execute_plans(env, norm, init[:, :1], plans, FS)
  with pytest.raises(ValueError, match='plans'):
    execution.execute_plans(env, norm, init, plans[:, :, :4], FS)
