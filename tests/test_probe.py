"""Readout features of the state (wmjax.data.features) and the frozen encoder's linear probe
(wmjax.training.probe), with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import pusht as pusht_config
from wmjax import data as data_lib
from wmjax import models
from wmjax import training
from wmjax.data import features as features_lib
from wmjax.experiment import train as train_lib
from wmjax.training import pretrain as pretrain_lib
from wmjax.training import probe as probe_lib

PUSHT_NAMES = ('agent_x', 'agent_y', 'block_x', 'block_y', 'block_angle_cos', 'block_angle_sin',
               'agent_vx', 'agent_vy')


# ------------------------------------------------------------------------ readout features
def test_readout_names_per_task():
  assert data_lib.readout_names('pusht') == PUSHT_NAMES
  assert data_lib.readout_names('pointmaze') == ('x', 'y', 'vx', 'vy')
  assert data_lib.readout_names('wall') == ('x', 'y')
  with pytest.raises(ValueError, match="task 'cartpole'; choose one of"):
    data_lib.readout_names('cartpole')


def test_pusht_angle_target_is_continuous_across_the_wrap():
  # The block turns through pi: the wrapped angle jumps from ~pi to ~-pi between two frames.
  angles = np.linspace(np.pi - 0.05, np.pi + 0.05, 11)
  wrapped = np.mod(angles + np.pi, 2 * np.pi) - np.pi
  states = np.zeros((11, 7), np.float32)
  states[:, :4] = [100.0, 200.0, 300.0, 400.0]
  states[:, 4] = wrapped
  states[:, 5:] = [1.0, -2.0]
  assert np.max(np.abs(np.diff(states[:, 4]))) > 6  # The raw target jumps by ~2 pi.
  targets = data_lib.readout_targets('pusht', states)
  assert targets.shape == (11, 8) and targets.dtype == np.float32
  assert np.max(np.abs(np.diff(targets, axis=0))) < 0.011  # Steps of 0.01 rad: continuous.
  np.testing.assert_allclose(targets[:, 4], np.cos(angles), atol=1e-6)
  np.testing.assert_allclose(targets[:, 5], np.sin(angles), atol=1e-6)
  np.testing.assert_array_equal(targets[:, [0, 1, 2, 3, 6, 7]], states[:, [0, 1, 2, 3, 5, 6]])
  # Other tasks have no angles: the targets are the state.
  walls = np.random.default_rng(0).uniform(0, 64, (5, 2)).astype(np.float32)
  np.testing.assert_array_equal(data_lib.readout_targets('wall', walls), walls)
  with pytest.raises(ValueError, match=r'pusht states must be \(\.\.\., 7\)'):
    data_lib.readout_targets('pusht', walls)


def test_readout_weights_follow_the_readout_columns():
  np.testing.assert_array_equal(data_lib.readout_weights('pusht', ''), np.ones(8))
  np.testing.assert_array_equal(data_lib.readout_weights('pusht', 'block_angle=8, agent_vx=0'),
                                [1, 1, 1, 1, 8, 8, 0, 1])  # An angle weighs its cos and sin.
  np.testing.assert_array_equal(data_lib.readout_weights('wall', 'y=2.5'), [1, 2.5])
  for spec, match in (('block_angle_cos=2', "write name=weight with name one of .*'block_angle'"),
                      ('block_x', 'write name=weight'),
                      ('block_x=1,block_x=2', "'block_x' is weighted twice"),
                      ('block_x=-1', "'block_x' must be a finite number >= 0; got '-1'"),
                      ('block_x=nan', 'must be a finite number'),
                      ('block_x=two', "got 'two'")):
    with pytest.raises(ValueError, match=match):
      data_lib.readout_weights('pusht', spec)


def test_conv_pretraining_regresses_the_readout_targets(monkeypatch):
  """The training binary hands the conv encoder's state head cos / sin of the PushT angle."""
  c = pusht_config.get_config('test')
  c.model.encoder = 'conv'
  c.train.encoder_pretrain_images = 12
  c.train.encoder_pretrain_feature_weights = 'block_angle=8'
  seen = {}

  def fake_pretrain(images, config, key, **kw):
    del config, key  # Unused.
    seen.update(kw, images=images)
    return {}, {'final_loss': np.float32(0.0)}

  monkeypatch.setattr(pretrain_lib, 'pretrain_conv_autoencoder', fake_pretrain)
  monkeypatch.setattr(pretrain_lib, 'render_frames',
                      lambda env, s, size: np.zeros((len(s), size, size, 3), np.uint8))
  rng = np.random.default_rng(0)
  states = rng.uniform(-np.pi, np.pi, (2, 10, 7)).astype(np.float32)
  train = data_lib.WindowArrays(states, None, None, None)
  kwargs = {'conv': dict(c.model.conv)}
  train_lib.pretrain_encoder(c, None, train, kwargs, progress=False)
  assert seen['states'].shape == (12, 8) and len(seen['images']) == 12
  rows = [np.flatnonzero(np.all(states.reshape(-1, 7)[:, :4] == t[:4], axis=1))[0]
          for t in seen['states']]
  np.testing.assert_allclose(seen['states'], data_lib.readout_targets(
      'pusht', states.reshape(-1, 7)[rows]))
  np.testing.assert_array_equal(seen['feature_weights'], [1, 1, 1, 1, 8, 8, 1, 1])


# ------------------------------------------------------------------------ the probe itself
def test_linear_probe_knows_a_linear_code_from_noise():
  """A synthetic encoder: a random linear image of (a, b) among noise features; a is encoded, c
  is independent of the latent, d is a nonlinear function of a."""
  rng = np.random.default_rng(0)
  n_train, n_test, d = 2000, 1000, 32
  n = n_train + n_test
  a, b, c = rng.normal(size=(3, n))
  latents = np.concatenate([np.stack([a, b], 1) @ rng.normal(size=(2, 8)),
                            rng.normal(size=(n, d - 8))], axis=1)
  targets = np.stack([a, c, np.abs(a)], axis=1)
  r2 = training.linear_probe_r2(latents[:n_train], targets[:n_train], latents[n_train:],
                                targets[n_train:], ridge=1e-2)
  assert r2.shape == (3,)
  assert r2[0] > 0.99  # Linearly encoded.
  assert abs(r2[1]) < 0.05  # Noise.
  assert r2[2] < 0.05  # |a| has no linear readout.
  # More features than frames (the dual solve) still finds the code; scale-free ridge.
  wide = np.concatenate([latents, 0.1 * rng.normal(size=(n, 3000))], axis=1)
  r2_wide = training.linear_probe_r2(1e3 * wide[:n_train], targets[:n_train],
                                     1e3 * wide[n_train:], targets[n_train:], ridge=1e-2)
  assert r2_wide[0] > 0.9 and r2_wide[1] < 0.05
  # A constant target has no R^2.
  const = np.ones((n, 1))
  assert np.isnan(training.linear_probe_r2(latents[:n_train], const[:n_train],
                                           latents[n_train:], const[n_train:]))[0]
  with pytest.raises(ValueError, match='ridge must be > 0'):
    training.linear_probe_r2(latents, targets, latents, targets, ridge=0.0)
  with pytest.raises(ValueError, match='disagree on the frame count'):
    training.linear_probe_r2(latents, targets[:10], latents, targets)


def test_probe_matrix_reads_latent_differences_in_target_stds():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 12))
  y = np.concatenate([x[:, :3] @ rng.normal(size=(3, 2)) * [1.0, 50.0]
                      + 0.1 * rng.normal(size=(500, 2)), np.ones((500, 1))], axis=1)
  m = probe_lib.probe_matrix(x, y, ridge=1e-2)
  assert m.shape == (12, 3) and m.dtype == np.float32
  read = probe_lib.fit_linear_probe(x, y[:, :2] / y[:, :2].std(axis=0), ridge=1e-2)
  a, b = rng.normal(size=(2, 7, 12))
  np.testing.assert_allclose((a - b) @ m[:, :2], read(a) - read(b), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(m[:, 2], 0.0)  # A constant target reads nothing.
  # In stds: the feature 50x larger reads on the same scale as the other.
  assert 0.2 < np.linalg.norm(m[:, 1]) / np.linalg.norm(m[:, 0]) < 5


def _pusht_arrays(key, num):
  """Synthetic PushT trajectories (raw states, proprio = agent xy + velocity) with unit stats."""
  k1, k2 = jax.random.split(key)
  states = jnp.concatenate([jax.random.uniform(k1, (num, 6, 4), minval=50, maxval=450),
                            jax.random.uniform(k2, (num, 6, 1), minval=-np.pi, maxval=np.pi),
                            jax.random.normal(k1, (num, 6, 2))], -1)
  proprio = states[..., jnp.array([0, 1, 5, 6])]
  stats = data_lib.Stats(jnp.zeros(2), jnp.ones(2), jnp.full((4,), 250.0), jnp.full((4,), 100.0),
                         jnp.zeros(7), jnp.ones(7))
  return data_lib.WindowArrays(states, proprio, jnp.zeros((num, 5, 2)), stats)


def _identity_pusht():
  """(model, params, train, test): an untrained identity-encoder PushT model on synthetic data."""
  model = models.make_world_model(
      encoder='identity', state_dim=7, proprio_dim=4, action_dim=10, num_hist=1,
      predictor=dict(depth=1, num_heads=1, head_dim=4, mlp_dim=8, dropout=0.0))
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = model.init(jax.random.key(0), obs)
  train, test = _pusht_arrays(jax.random.key(1), 100), _pusht_arrays(jax.random.key(2), 40)
  return model, params, train, test


def test_probe_of_the_identity_encoder():
  """The identity encoder's visual token is the raw state: every component but the angle is read
  exactly; cos / sin of a wrapped angle are not linear in it."""
  model, params, train, test = _identity_pusht()
  out = training.probe_encoder(model, params, 'pusht', train, test, train_frames=400,
                               test_frames=200, ridge=1e-3)
  assert (out['train_frames'], out['test_frames']) == (400, 200)
  assert tuple(out['visual']) == PUSHT_NAMES == tuple(out['visual_proprio'])
  for name in ('agent_x', 'agent_y', 'block_x', 'block_y', 'agent_vx', 'agent_vy'):
    assert out['visual'][name] > 0.999
  assert out['visual']['block_angle_cos'] < 0.2  # cos is even in the angle: no linear readout.
  # The error in the feature's units: positions read to a fraction of a px; RMSE^2 / variance
  # is 1 - R^2 on the same test frames.
  assert tuple(out['visual_rmse']) == PUSHT_NAMES
  assert max(out['visual_rmse'][n] for n in ('agent_x', 'block_x', 'block_y')) < 0.5
  test_states = probe_lib.sample_frames(test, 200, seed=1)[0]  # The frames it scored on.
  targets = features_lib.readout_targets('pusht', test_states)
  for name, var in zip(PUSHT_NAMES, targets.var(axis=0)):
    assert out['visual_rmse'][name]**2 / var == pytest.approx(1 - out['visual'][name], abs=1e-6)
  table = probe_lib.format_probe(out)
  assert 'block_angle_sin' in table and 'visual+proprio' in table and 'visual RMSE' in table
  # Frames are drawn without replacement, seeded.
  s1, p1 = probe_lib.sample_frames(train, 50, seed=3)
  s2, _ = probe_lib.sample_frames(train, 50, seed=3)
  np.testing.assert_array_equal(s1, s2)
  assert len(np.unique(s1, axis=0)) == 50 and p1.shape == (50, 4)
  assert len(probe_lib.sample_frames(test, 10_000, seed=0)[0]) == 40 * 6


def test_motion_probe_scores_the_change_a_model_predicts():
  """The identity encoder's latent carries every state change exactly (the 'encoder' row); an
  untrained predictor's open-loop prediction carries almost none of it."""
  model, params, train, test = _identity_pusht()
  out = training.probe_motion(model, params, 'pusht', train, test, frameskip=5, horizon=1,
                              train_frames=400, windows=30, batch_size=16)
  assert (out['horizon'], out['windows']) == (1, 30)
  assert tuple(out['encoder']) == PUSHT_NAMES == tuple(out['markov']) == tuple(out['history'])
  for name in ('agent_x', 'agent_y', 'block_x', 'block_y', 'agent_vx', 'agent_vy'):
    assert out['encoder'][name] > 0.999
    assert out['markov'][name] < 0.5
  assert 'history' in probe_lib.format_motion(out)
  # The encoder probe's fitted reader (the same training frames) gives the same scores.
  _, read = training.probe_encoder(model, params, 'pusht', train, test, train_frames=400,
                                   test_frames=50, return_reader=True)
  shared = training.probe_motion(model, params, 'pusht', train, test, frameskip=5, horizon=1,
                                 windows=30, batch_size=16, read=read)
  for key in ('encoder', 'markov', 'history'):
    np.testing.assert_allclose(list(shared[key].values()), list(out[key].values()), atol=1e-6)
