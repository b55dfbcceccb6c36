"""Planning objectives: the `last` / `all` costs, alpha, and the world-model cost contract."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wmjax import planning

N, DV, DP, H, A = 3, 4, 2, 3, 2


def latent(key, time=None):
  kv, kp = jax.random.split(key)
  lead = () if time is None else (time,)
  return {'visual': jax.random.normal(kv, lead + (N, DV)),
          'proprio': jax.random.normal(kp, lead + (DP,))}


class FakeModel:
  """Linear latent dynamics with the WorldModel.rollout signature (the history mode moves 2x)."""

  def rollout(self, params, z0, actions, mode):
    scale = {'markov': 1.0, 'history': 2.0}[mode]

    def step(z, a):
      z = {'visual': z['visual'] + scale * (params['bv'] @ a).reshape(N, DV),
           'proprio': z['proprio'] + scale * params['bp'] @ a}
      return z, z

    _, zs = jax.lax.scan(step, z0, actions)
    return jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs]), z0, zs)


def fake_params(key):
  kv, kp = jax.random.split(key)
  return {'bv': jax.random.normal(kv, (N * DV, A)), 'bp': jax.random.normal(kp, (DP, A))}


def test_latent_distance_formula():
  z, g = latent(jax.random.key(0)), latent(jax.random.key(1))
  want = (np.mean((np.asarray(z['visual']) - np.asarray(g['visual'])) ** 2)
          + 0.3 * np.mean((np.asarray(z['proprio']) - np.asarray(g['proprio'])) ** 2))
  np.testing.assert_allclose(planning.latent_distance(z, g, 0.3), want, rtol=1e-5)


@pytest.mark.parametrize('base', [0.5, 0.8])
def test_all_weights_sum_to_one_and_match_formula(base):
  w = np.asarray(planning.trajectory_weights(H + 1, base))
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  powers = base ** np.arange(H + 1)
  np.testing.assert_allclose(w, powers / powers.sum(), rtol=1e-6)
  assert np.all(np.diff(w) < 0)


def test_all_mode_is_weighted_mean_over_every_frame_including_z0():
  z_traj, g = latent(jax.random.key(0), H + 1), latent(jax.random.key(1))
  d = np.array([float(planning.latent_distance(jax.tree.map(lambda x: x[t], z_traj), g, 1.0))
                for t in range(H + 1)])
  c = 0.5 ** np.arange(H + 1) / np.sum(0.5 ** np.arange(H + 1))
  got = planning.trajectory_cost(z_traj, g, mode='all', alpha=1.0, base=0.5)
  np.testing.assert_allclose(got, np.mean(c * d), rtol=1e-5)


def test_last_mode_uses_only_final_frame():
  z_traj, g = latent(jax.random.key(0), H + 1), latent(jax.random.key(1))
  cost = planning.trajectory_cost(z_traj, g, mode='last', alpha=1.0)
  np.testing.assert_allclose(
      cost, planning.latent_distance(jax.tree.map(lambda x: x[-1], z_traj), g, 1.0))
  earlier = jax.tree.map(lambda x: x.at[:-1].add(10.0), z_traj)
  np.testing.assert_allclose(planning.trajectory_cost(earlier, g, mode='last'), cost, rtol=1e-6)
  final = jax.tree.map(lambda x: x.at[-1].add(1.0), z_traj)
  assert not np.isclose(float(planning.trajectory_cost(final, g, mode='last')), float(cost))
  assert not np.isclose(float(planning.trajectory_cost(earlier, g, mode='all')),
                        float(planning.trajectory_cost(z_traj, g, mode='all')))


@pytest.mark.parametrize('mode', planning.objectives.MODES)
def test_alpha_zero_ignores_proprio(mode):
  z_traj, g = latent(jax.random.key(0), H + 1), latent(jax.random.key(1))
  moved = dict(z_traj, proprio=z_traj['proprio'] + 5.0)
  cost = lambda z, alpha: float(planning.trajectory_cost(z, g, mode=mode, alpha=alpha))
  np.testing.assert_allclose(cost(moved, 0.0), cost(z_traj, 0.0), rtol=1e-6)
  assert cost(moved, 1.0) > cost(z_traj, 1.0)


def test_shape_and_choice_errors():
  z, g = latent(jax.random.key(0)), latent(jax.random.key(1))
  z_traj = latent(jax.random.key(2), H + 1)
  with pytest.raises(ValueError, match='keys'):
    planning.latent_distance({'visual': z['visual']}, g, 1.0)
  with pytest.raises(ValueError, match='shapes'):
    planning.latent_distance(z_traj, g, 1.0)  # A trajectory is not one frame.
  with pytest.raises(ValueError, match='does not match'):
    planning.latent_distance(dict(z, proprio=jnp.zeros(DP + 1)), g, 1.0)
  with pytest.raises(ValueError, match='mode'):
    planning.trajectory_cost(z_traj, g, mode='first')
  with pytest.raises(ValueError, match='time axis'):
    planning.trajectory_cost(dict(z_traj, proprio=z_traj['proprio'][:-1]), g)
  model, params = FakeModel(), fake_params(jax.random.key(3))
  with pytest.raises(ValueError, match='rollout'):
    planning.world_model_cost(model, params, z, g, rollout='window')
  with pytest.raises(ValueError, match='rollout'):
    planning.world_model_cost(object(), params, z, g)
  with pytest.raises(ValueError, match='mode'):
    planning.world_model_cost(model, params, z, g, mode='sum')


def test_world_model_cost_checks_action_shape_at_trace_time():
  z, g = latent(jax.random.key(0)), latent(jax.random.key(1))
  cost = planning.world_model_cost(FakeModel(), fake_params(jax.random.key(3)), z, g,
                                   horizon=H, action_size=A)
  assert cost(jnp.zeros((H, A))).shape == ()
  with pytest.raises(ValueError, match='horizon'):
    jax.jit(cost)(jnp.zeros((H + 1, A)))
  with pytest.raises(ValueError, match='size'):
    jax.jit(cost)(jnp.zeros((H, A + 1)))
  with pytest.raises(ValueError, match=r'\(H, A\)'):
    jax.jit(cost)(jnp.zeros((2, H, A)))

  class ShortModel(FakeModel):
    def rollout(self, params, z0, actions, mode):
      return jax.tree.map(lambda x: x[1:], super().rollout(params, z0, actions, mode))

  short = planning.world_model_cost(ShortModel(), fake_params(jax.random.key(3)), z, g)
  with pytest.raises(ValueError, match='H\\+1'):
    short(jnp.zeros((H, A)))


def test_world_model_cost_matches_manual_rollout_and_passes_mode():
  z, g = latent(jax.random.key(0)), latent(jax.random.key(1))
  model, params = FakeModel(), fake_params(jax.random.key(3))
  actions = jax.random.normal(jax.random.key(4), (H, A))
  for rollout in planning.objectives.ROLLOUTS:
    cost = planning.world_model_cost(model, params, z, g, mode='all', alpha=0.5, rollout=rollout)
    want = planning.trajectory_cost(model.rollout(params, z, actions, rollout), g, 'all', 0.5)
    np.testing.assert_allclose(cost(actions), want, rtol=1e-6)
  markov = planning.world_model_cost(model, params, z, g, rollout='markov')
  history = planning.world_model_cost(model, params, z, g, rollout='history')
  assert not np.isclose(float(markov(actions)), float(history(actions)))
  bounded = planning.world_model_cost(model, params, z, g, action_low=-0.1, action_high=0.1)
  np.testing.assert_allclose(bounded(actions), markov(jnp.clip(actions, -0.1, 0.1)), rtol=1e-6)


def test_planner_solves_world_model_cost():
  # Goal reachable by construction: the goal is the rollout of known actions.
  model, params = FakeModel(), fake_params(jax.random.key(3))
  z0 = latent(jax.random.key(0))
  true_actions = 0.5 * jax.random.normal(jax.random.key(5), (H, A))
  z_goal = jax.tree.map(lambda x: x[-1], model.rollout(params, z0, true_actions, 'markov'))
  planner = planning.gradient_planner(H, A, optax.adam(0.1), 150, noise_std=0.0)

  @jax.jit
  def solve(z0, z_goal, key):
    cost = planning.world_model_cost(model, params, z0, z_goal, mode='last', alpha=1.0,
                                     horizon=H, action_size=A)
    return planner.plan(cost, planner.init(key), key)

  _, _, info = solve(z0, z_goal, jax.random.key(6))
  assert float(info['cost']) < 1e-3 < float(info['cost_history'][0])
