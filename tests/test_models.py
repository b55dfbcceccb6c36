"""Contracts of the world-model modules at tiny sizes."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakes
from wmjax import models
from wmjax.models import conv
from wmjax.models import predictor as predictor_lib
from wmjax.training import pretrain

TINY_PREDICTOR = dict(depth=2, num_heads=2, head_dim=8, mlp_dim=32)
P = 3  # proprio size
A = 10  # frameskip * A


CONV = dict(image_size=16, channels=(4, 8), token_dim=6)  # 4 x 4 tokens of 6 dims.


def _conv_wm(**kw):
  cfg = dict(encoder='conv', image_size=16, proprio_dim=P, action_dim=A, num_hist=3,
             conv=dict(channels=CONV['channels'], token_dim=CONV['token_dim']),
             predictor=TINY_PREDICTOR)
  cfg.update(kw)
  return models.make_world_model(cfg)


def _obs(wm, lead, seed=0):
  rng = np.random.default_rng(seed)
  obs = {'proprio': rng.normal(size=lead + (wm.proprio_dim,)).astype(np.float32),
         'state': rng.normal(size=lead + (max(wm.state_dim, 1),)).astype(np.float32)}
  if wm.obs_key == 'pixels':
    obs['pixels'] = rng.integers(0, 256, lead + (wm.image_size, wm.image_size, 3), dtype=np.uint8)
  return obs


@pytest.fixture(scope='module', name='setup')
def fixture_setup():
  wm = _conv_wm()
  params = wm.init(jax.random.key(0), _obs(wm, ()))
  z = jax.jit(wm.encode)(params, _obs(wm, (3,)))
  actions = jnp.asarray(np.random.default_rng(1).normal(size=(3, A)), jnp.float32)
  return wm, params, z, actions


def _perturb(tree, t, seed):
  """Replaces frame t of every leaf (leading axis T) with noise."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x.at[t].set(rng.normal(size=x.shape[1:]).astype(x.dtype)), tree)


def test_frame_causal_mask():
  m = predictor_lib.frame_causal_mask(3, 2)
  expect = np.kron(np.tril(np.ones((3, 3), bool)), np.ones((2, 2), bool))
  np.testing.assert_array_equal(m, expect)


@pytest.mark.parametrize('encoder', ['identity', 'conv', 'dinov2_vits14'])
def test_shapes_of_every_module(encoder):
  if encoder == 'conv':
    wm = _conv_wm()  # Same configuration as the fixture: its compiled init is reused.
  else:
    wm = models.make_world_model(
        encoder=encoder, image_size=8, state_dim=5, proprio_dim=P, action_dim=A, num_hist=2,
        dinov2=dict(resize_to=8, patch_size=4, dim=8, depth=1, num_heads=2, mlp_dim=16,
                    pos_grid=3),
        predictor=dict(TINY_PREDICTOR, width=16))
  n, dv = {'identity': (1, 5), 'conv': (16, 6), 'dinov2_vits14': (4, 8)}[encoder]
  assert wm.latent_spec == models.LatentSpec(n, dv, 10, 10, A, dv + 20)
  hash(wm)  # Static and hashable: safe to close over in jit.
  params = wm.init(jax.random.key(0), _obs(wm, (4,)))
  assert set(params) == {'encoder', 'proprio_encoder', 'action_encoder', 'predictor'}
  assert ('proj_in' in params['predictor']) == (encoder != 'conv')  # The width option.

  @jax.jit
  def run(params, obs, actions):  # One compile for every module.
    z = wm.encode(params, obs)
    out = {'z': z, 'emb': wm.embed_actions(params, actions), 'pred': wm.predict(params, z, actions)}
    if encoder == 'conv':  # Rollout shapes are checked against loops in the rollout tests.
      out['decoded'] = wm.decode(params, z['visual'])
    return out

  out = run(params, _obs(wm, (4, 2)), jnp.zeros((4, 2, A)))
  z = out['z']
  assert z['visual'].shape == (4, 2, n, dv) and z['proprio'].shape == (4, 2, 10)
  assert out['emb'].shape == (4, 2, 10)
  assert jax.tree.map(jnp.shape, out['pred']) == jax.tree.map(jnp.shape, z)
  if encoder == 'conv':
    assert out['decoded'].shape == (4, 2, 16, 16, 3)
  else:
    with pytest.raises(ValueError, match='decode needs the conv encoder'):
      wm.decode(params, z['visual'])


def test_paper_size_predictor_has_about_20m_parameters():
  wm = models.make_world_model(encoder='dinov2_vits14', image_size=224, proprio_dim=4)
  shapes = jax.eval_shape(wm.init, jax.random.key(0), wm.obs_spec)
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  assert wm.latent_spec.num_tokens == 196 and wm.latent_spec.token_dim == 404
  assert 19.5e6 < count(shapes['predictor']) < 20.5e6
  assert 21.5e6 < count(shapes['encoder']) < 22.5e6  # ViT-S/14.


@pytest.mark.parametrize('t', [1, 2])
def test_causal_mask_blocks_future_frames(setup, t):
  wm, params, z, actions = setup
  base = wm.predict(params, z, actions)
  z2, a2 = _perturb(z, t, seed=t), _perturb(actions, t, seed=10 + t)
  out = wm.predict(params, z2, a2)
  for k in ('visual', 'proprio'):
    np.testing.assert_array_equal(out[k][:t], base[k][:t])  # Exactly unchanged.
    assert not np.allclose(out[k][t:], base[k][t:])


def test_encoder_is_frozen(setup):
  wm, params, _, _ = setup
  obs = _obs(wm, (2,))
  g = jax.grad(lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(wm.encode(p, obs))))(params)
  assert all(np.all(x == 0) for x in jax.tree.leaves(g['encoder']))
  assert any(np.any(x != 0) for x in jax.tree.leaves(g['proprio_encoder']))


def test_rollouts_match_python_loops(setup):
  wm, params, z, _ = setup
  z0 = jax.tree.map(lambda x: x[0], z)
  actions = jnp.asarray(np.random.default_rng(2).normal(size=(5, A)), jnp.float32)
  predict, predict_next = jax.jit(wm.predict), jax.jit(wm.predict_next)
  # Markov: z_{t+1} = predictor([z_t | a_t]) on one frame.
  frames = [z0]
  for t in range(5):
    one = jax.tree.map(lambda x: x[None], frames[-1])
    frames.append(jax.tree.map(lambda x: x[0], predict(params, one, actions[t:t + 1])))
  markov = jax.jit(lambda p, z0, a: wm.rollout(p, z0, a, mode='markov'))(params, z0, actions)
  for k in ('visual', 'proprio'):
    np.testing.assert_allclose(markov[k], np.stack([f[k] for f in frames]), atol=1e-5)
  # History: window grows 1 -> num_hist, then slides.
  frames = [z0]
  for t in range(5):
    lo = max(0, t + 1 - wm.num_hist)
    window = {k: jnp.stack([f[k] for f in frames[lo:]]) for k in ('visual', 'proprio')}
    pred = predict(params, window, actions[lo:t + 1])
    frames.append(jax.tree.map(lambda x: x[-1], pred))
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), frames[-1],
                 predict_next(params, window, actions[lo:t + 1]))
  got = jax.jit(lambda p, z0, a: wm.rollout(p, z0, a, mode='history'))(params, z0, actions)
  for k in ('visual', 'proprio'):
    np.testing.assert_allclose(got[k], np.stack([f[k] for f in frames]), atol=1e-5)
  # The two rollouts differ once the history holds more than one frame.
  np.testing.assert_allclose(markov['visual'][1], got['visual'][1], atol=1e-5)
  assert not np.allclose(markov['visual'][2:], got['visual'][2:])


def test_predictor_cache_extends_a_window_frame_by_frame():
  """One frame at a time with the key/value cache gives the whole window's outputs (frame-causal:
  frame t's output depends on frames <= t only), also under vmap and grad."""
  pred = predictor_lib.Predictor(num_frames=3, **TINY_PREDICTOR)
  tokens = _tokens((2, 3, 4, 20))
  params = pred.init(jax.random.key(0), tokens)
  apply = jax.jit(pred.apply)  # Jitted: one program per check (kept in the tests' cache).
  full = apply(params, tokens)

  def by_frame(p, x):
    cache, outs = (), []
    for t in range(x.shape[-3]):
      out, cache = pred.apply(p, x[..., t:t + 1, :, :], cache=cache)
      outs.append(out)
    return jnp.concatenate(outs, axis=-3)

  np.testing.assert_allclose(jax.jit(by_frame)(params, tokens), full, atol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.vmap(by_frame, (None, 0)))(params, tokens), full,
                             atol=1e-5)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(f(params, x)))))(tokens)
  np.testing.assert_allclose(grad(by_frame), grad(pred.apply), atol=1e-5)
  with pytest.raises(ValueError, match='one frame'):
    apply(params, tokens, cache=())
  _, cache = apply(params, tokens[:, :1], cache=())
  for t in (1, 2):
    _, cache = apply(params, tokens[:, t:t + 1], cache=cache)
  with pytest.raises(ValueError, match='> num_hist=3'):
    apply(params, tokens[:, :1], cache=cache)


def test_predictor_last_frame_only_is_the_windows_last_output():
  """A sliding rollout reads only the newest prediction; computing the last block for the last
  frame alone gives it exactly, also under vmap and grad."""
  pred = predictor_lib.Predictor(num_frames=3, **TINY_PREDICTOR)
  tokens = _tokens((2, 3, 4, 20))
  params = pred.init(jax.random.key(0), tokens)
  last = lambda p, x: pred.apply(p, x, last_frame_only=True)
  full = jax.jit(pred.apply)(params, tokens)  # Jitted: one program per check, not op by op.
  assert jax.jit(last)(params, tokens).shape == (2, 1, 4, 20)
  np.testing.assert_allclose(jax.jit(last)(params, tokens), full[:, -1:], atol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.vmap(last, (None, 0)))(params, tokens), full[:, -1:],
                             atol=1e-5)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(f(params, x)[:, -1]))))(tokens)
  np.testing.assert_allclose(grad(last), grad(pred.apply), atol=1e-5)
  np.testing.assert_allclose(jax.jit(last)(params, tokens[:, :1]), full[:, :1], atol=1e-5)
  with pytest.raises(ValueError, match='last_frame_only'):
    pred.apply(params, tokens[:, :1], cache=(), last_frame_only=True)


@pytest.mark.parametrize('mode', models.ROLLOUT_MODES)
def test_rollout_gradients_wrt_actions(setup, mode):
  wm, params, z, _ = setup
  z0 = jax.tree.map(lambda x: x[0], z)
  goal = jax.tree.map(lambda x: x[2], z)

  def cost(actions):
    zs = wm.rollout(params, z0, actions, mode=mode)
    return jnp.mean((zs['visual'][-1] - goal['visual'])**2) + jnp.mean(
        (zs['proprio'][-1] - goal['proprio'])**2)

  g = jax.jit(jax.grad(cost))(jnp.zeros((4, A)))
  assert g.shape == (4, A)
  assert np.all(np.isfinite(g))
  assert np.all(np.abs(g).sum(-1) > 0)  # Every step's action matters.


def test_dropout_only_when_not_deterministic(setup):
  wm, params, z, actions = setup
  k1, k2 = jax.random.key(1), jax.random.key(2)
  det = wm.predict(params, z, actions)
  jax.tree.map(np.testing.assert_array_equal, det, wm.predict(params, z, actions, rng=k1))
  d1 = wm.predict(params, z, actions, rng=k1, deterministic=False)
  jax.tree.map(np.testing.assert_array_equal, d1,
               wm.predict(params, z, actions, rng=k1, deterministic=False))
  assert not np.allclose(d1['visual'], det['visual'])
  assert not np.allclose(d1['visual'],
                         wm.predict(params, z, actions, rng=k2, deterministic=False)['visual'])
  with pytest.raises(ValueError, match='needs rng'):
    wm.predict(params, z, actions, deterministic=False)
  no_dropout = _conv_wm(predictor=dict(TINY_PREDICTOR, dropout=0.0))
  jax.tree.map(np.testing.assert_array_equal,
               no_dropout.predict(params, z, actions, rng=k1, deterministic=False), det)


def test_predict_embedded_matches_predict(setup):
  wm, params, z, actions = setup
  emb = wm.embed_actions(params, actions)
  jax.tree.map(np.testing.assert_array_equal, wm.predict(params, z, actions),
               wm.predict_embedded(params, z['visual'], z['proprio'], emb))


def _dot_images(n, size, seed=0, return_positions=False):
  """Grey background with one small coloured square at random positions; positions (n, 2) x, y."""
  rng = np.random.default_rng(seed)
  imgs = np.full((n, size, size, 3), 200, np.uint8)
  positions = np.zeros((n, 2), np.float32)
  for i in range(n):
    x, y = rng.integers(0, size - 3, 2)
    imgs[i, y:y + 3, x:x + 3] = rng.integers(0, 120, 3)
    positions[i] = x, y
  return (imgs, positions) if return_positions else imgs


def test_conv_autoencoder_pretraining_lowers_loss():
  wm = _conv_wm()
  enc, metrics = pretrain.pretrain_conv_autoencoder(
      _dot_images(32, 16), CONV, jax.random.key(0), steps=60, batch_size=16, learning_rate=3e-3,
      progress=False)
  assert metrics['loss'].shape == (60,)
  assert metrics['final_loss'] < 0.3 * metrics['initial_loss']
  assert metrics['final_foreground_mse'] < metrics['initial_foreground_mse']
  params = wm.init(jax.random.key(1), _obs(wm, ()), encoder_params=enc)
  jax.tree.map(np.testing.assert_array_equal, params['encoder'], enc)
  with pytest.raises(ValueError, match='encoder_params do not match'):
    other = _conv_wm(conv=dict(token_dim=5))
    other.init(jax.random.key(1), _obs(other, ()), encoder_params=enc)
  with pytest.raises(ValueError, match=r'images must be \(M, 16, 16, 3\)'):
    pretrain.pretrain_conv_autoencoder(_dot_images(4, 8), CONV, jax.random.key(0), steps=1)


def _probe_r2(tokens_fit, y_fit, tokens_test, y_test):
  """R^2 per dim of a ridge-regularised linear readout fitted on one split, scored on another."""
  x_fit, x_test = (np.asarray(t, np.float64).reshape(len(t), -1) for t in (tokens_fit, tokens_test))
  mu = x_fit.mean(0)
  x_fit, x_test = x_fit - mu, x_test - mu
  lam = 1e-2 * np.trace(x_fit.T @ x_fit) / x_fit.shape[1]
  gram = x_fit.T @ x_fit + lam * np.eye(x_fit.shape[1])
  w = np.linalg.solve(gram, x_fit.T @ (y_fit - y_fit.mean(0)))
  pred = x_test @ w + y_fit.mean(0)
  return 1.0 - ((pred - y_test)**2).mean(0) / y_test.var(0)


def test_state_head_makes_tokens_encode_positions():
  imgs, pos = _dot_images(96, 16, seed=3, return_positions=True)
  encoders = {}
  for name, kw in (('with_head', dict(states=pos[:64], state_weight=1.0)), ('without', {})):
    encoders[name], metrics = pretrain.pretrain_conv_autoencoder(
        imgs[:64], CONV, jax.random.key(0), steps=60, batch_size=16, learning_rate=3e-3,
        progress=False, **kw)
    if name == 'with_head':
      assert metrics['final_state_mse'] < 0.3 * metrics['initial_state_mse']
  module = conv.conv_autoencoder_from_config(CONV)
  encode = jax.jit(lambda p, x: module.apply({'params': p}, x))
  r2 = {}
  for name, enc in encoders.items():
    tokens = np.asarray(encode(enc, imgs))  # (96, 16, 6), standardised.
    assert abs(tokens[:64].mean()) < 1e-4
    np.testing.assert_allclose(tokens[:64].var(0).mean(), 1.0, rtol=1e-3)
    r2[name] = _probe_r2(tokens[:64], pos[:64], tokens[64:], pos[64:])
  assert np.all(r2['with_head'] > 0.75), r2  # Held-out frames: positions linearly decodable.
  assert np.mean(r2['with_head']) > np.mean(r2['without']), r2
  with pytest.raises(ValueError, match=r'states must be \(M, S\) with M = 64'):
    pretrain.pretrain_conv_autoencoder(imgs[:64], CONV, jax.random.key(0), steps=1, states=pos)


def test_feature_weights_weigh_the_readouts_squared_errors():
  imgs, pos = _dot_images(8, 16, seed=4, return_positions=True)
  module, head = conv.conv_autoencoder_from_config(CONV), pretrain.StateHead(2)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {'autoencoder': module.init(k1, imgs[:1], method='autoencode')['params']}
  tokens = jax.jit(module.apply)({'params': params['autoencoder']}, imgs)
  params['head'] = head.init(k2, tokens)['params']
  params['head'] = jax.tree.map(lambda x: x + 0.01, params['head'])  # Not the zero readout.
  states = jnp.asarray(pretrain.normalise_states(pos))
  sq = np.asarray(jnp.square(jax.jit(head.apply)({'params': params['head']}, tokens) - states))
  loss = jax.jit(lambda w: pretrain.pretraining_loss(module, head, params, imgs, states, 0.5, 2.0,
                                                     w))  # One program per weighting, not op by op.
  recon, metrics = loss(jnp.zeros(2))
  np.testing.assert_allclose(recon, metrics['reconstruction_loss'], rtol=1e-6)
  np.testing.assert_allclose(metrics['state_mse'], sq.mean(), rtol=1e-5)  # Reported unweighted.
  np.testing.assert_allclose(loss(None)[0], recon + 2.0 * sq.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss(jnp.asarray([3.0, 0.0]))[0],
                             recon + 2.0 * 3.0 * sq[:, 0].mean() / 2, rtol=1e-5)
  for w, match in ((np.ones(3), r'feature_weights must be \(2,\)'),
                   (-np.ones(2), 'must be finite and >= 0')):
    with pytest.raises(ValueError, match=match):
      pretrain.pretrain_conv_autoencoder(imgs, CONV, jax.random.key(0), steps=1, states=pos,
                                         feature_weights=w)
  with pytest.raises(ValueError, match='pass states too'):
    pretrain.pretrain_conv_autoencoder(imgs, CONV, jax.random.key(0), steps=1,
                                       feature_weights=np.ones(2))


def test_interrupted_pretraining_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  imgs, pos = _dot_images(16, 16, seed=5, return_positions=True)
  run = functools.partial(pretrain.pretrain_conv_autoencoder, imgs, CONV, jax.random.key(2),
                          steps=6, batch_size=4, learning_rate=3e-3, log_every=1,
                          progress=False, states=pos, save_every=2)
  ref, ref_metrics = run()
  path = str(tmp_path / pretrain.RESUME_FILE)
  with monkeypatch.context() as m:
    m.setattr(pretrain.tqdm, 'tqdm', fakes.interrupting_bar(5))
    with pytest.raises(fakes.Interrupted):
      run(resume_file=path)  # Stopped after step 5: the state written at step 4 remains.
  enc, metrics = run(resume_file=path)
  assert int(metrics['resumed_from_step']) == 4 and int(ref_metrics['resumed_from_step']) == 0
  jax.tree.map(np.testing.assert_array_equal, enc, ref)
  np.testing.assert_array_equal(metrics['loss'], ref_metrics['loss'])
  np.testing.assert_array_equal(metrics['final_loss'], ref_metrics['final_loss'])
  # Written with other settings: refused, naming them, and the file is kept.
  with pytest.raises(ValueError, match=r'other learning_rate, steps than this run'):
    run(resume_file=path, steps=8, learning_rate=1e-3)
  with pytest.raises(ValueError, match=r'\(step 4\) was written with other images, states than'):
    pretrain.pretrain_conv_autoencoder(imgs[::-1], CONV, jax.random.key(2), steps=6,
                                       batch_size=4, learning_rate=3e-3, progress=False,
                                       states=pos[::-1], save_every=2, resume_file=path)
  # Unreadable: set aside with a warning, and pretraining starts over.
  with open(path, 'wb') as f:
    f.write(b'half written')
  with pytest.warns(UserWarning, match='Could not read the encoder pretraining state'):
    enc, metrics = run(resume_file=path, save_every=0)
  assert int(metrics['resumed_from_step']) == 0
  jax.tree.map(np.testing.assert_array_equal, enc, ref)
  assert os.listdir(tmp_path / 'corrupt') == [pretrain.RESUME_FILE]
  with pytest.raises(ValueError, match='save_every >= 0'):
    run(save_every=-1)


def test_foreground_weights_mark_the_object():
  img = _dot_images(1, 16)[0].astype(np.float32) / 255
  w = pretrain.foreground_weights(jnp.asarray(img), 10.0)
  assert w.shape == (16, 16, 1)
  assert int((w > 1).sum()) == 9


def test_bad_input_raises_clear_errors(setup):
  wm, params, z, actions = setup
  obs = _obs(wm, (2,))
  with pytest.raises(ValueError, match=r"obs is missing \['pixels'\]"):
    wm.encode(params, {'proprio': obs['proprio']})
  with pytest.raises(ValueError, match=r"obs\['pixels'\] must have shape \(\.\.\., 16, 16, 3\)"):
    wm.encode(params, dict(obs, pixels=np.zeros((2, 9, 16, 3), np.uint8)))
  with pytest.raises(ValueError, match='must be uint8'):
    wm.encode(params, dict(obs, pixels=obs['pixels'].astype(np.float32)))
  with pytest.raises(ValueError, match='float_pixels=True needs floating'):
    wm.encode(params, obs, float_pixels=True)
  with pytest.raises(ValueError, match=r"obs\['proprio'\] must have shape \(\.\.\., 3\)"):
    wm.encode(params, dict(obs, proprio=np.zeros((2, 4), np.float32)))
  with pytest.raises(ValueError, match='different leading shapes'):
    wm.encode(params, dict(obs, proprio=np.zeros((3, P), np.float32)))
  with pytest.raises(ValueError, match=r'actions must have shape \(3, 10\)'):
    wm.predict(params, z, actions[:, :8])
  with pytest.raises(ValueError, match=r'actions must be \(\.\.\., 10\)'):
    wm.embed_actions(params, jnp.zeros((2, 4)))
  z4 = jax.tree.map(lambda x: jnp.concatenate([x, x[:1]]), z)
  with pytest.raises(ValueError, match=r'T=4 must be in \[1, num_hist=3\]'):
    wm.predict(params, z4, jnp.zeros((4, A)))
  with pytest.raises(ValueError, match='keys visual, proprio'):
    wm.predict(params, {'visual': z['visual']}, actions)
  z0 = jax.tree.map(lambda x: x[0], z)
  with pytest.raises(ValueError, match="Unknown rollout mode 'loop'"):
    wm.rollout(params, z0, actions, mode='loop')
  with pytest.raises(ValueError, match='z0 must be one frame'):
    wm.rollout(params, z, actions)
  with pytest.raises(ValueError, match=r'actions must have shape \(3, 10\)'):
    wm.rollout(params, z0, jnp.zeros((3, 4)))


def test_float_pixels_encode_like_uint8_and_differentiate(setup):
  wm, params, _, _ = setup
  obs = _obs(wm, (2,))
  as_float = dict(obs, pixels=obs['pixels'].astype(np.float32))
  z8 = wm.encode(params, obs)
  zf = wm.encode(params, as_float, float_pixels=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), z8, zf)
  g = jax.grad(lambda px: jnp.sum(wm.encode(params, dict(as_float, pixels=px),
                                            float_pixels=True)['visual'] ** 2))(
                                                as_float['pixels'])
  assert float(jnp.abs(g).sum()) > 0


def test_bad_config_raises_clear_errors():
  with pytest.raises(ValueError, match="Unknown world-model config field 'predictor.depht'"):
    _conv_wm(predictor=dict(depht=2))
  with pytest.raises(ValueError, match="Unknown encoder 'resnet'"):
    models.make_world_model(encoder='resnet', proprio_dim=P)
  with pytest.raises(ValueError, match='proprio_dim must be >= 1'):
    models.make_world_model(encoder='conv')
  with pytest.raises(ValueError, match='set state_dim >= 1'):
    models.make_world_model(encoder='identity', proprio_dim=P)
  with pytest.raises(ValueError, match='attention_impl'):
    _conv_wm(predictor=dict(attention_impl='flash'))
  with pytest.raises(ValueError, match='divisible by 2\\*\\*len\\(channels\\)'):
    _conv_wm(image_size=10).latent_spec  # pylint: disable=expression-not-assigned


# ------------------------------------------------------------------ predictor options (section 7)
def _tokens(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_attention_auto_and_cudnn_resolution():
  resolve = predictor_lib.resolve_attention_impl
  assert resolve('auto', 'bfloat16', backend='gpu') == 'cudnn'
  assert resolve('auto', 'float32', backend='gpu') is None
  assert resolve('auto', 'bfloat16', backend='cpu') is None
  assert resolve('auto', 'bfloat16', head_dim=12, backend='gpu') is None  # Kernel needs 8 | hd.
  assert resolve('cudnn', 'bfloat16', backend='gpu') == 'cudnn'
  assert resolve(None, 'bfloat16', backend='gpu') is None
  assert resolve('xla', 'bfloat16', backend='gpu') == 'xla'
  predictor_lib._WARNED.clear()  # pylint: disable=protected-access
  with pytest.warns(RuntimeWarning, match="falling back to 'xla' \\(the cpu backend\\)"):
    assert resolve('cudnn', 'bfloat16', backend='cpu') == 'xla'
  with pytest.warns(RuntimeWarning, match='dtype float32'):
    assert resolve('cudnn', 'float32', backend='gpu') == 'xla'


def test_cudnn_and_auto_run_on_cpu_like_xla():
  kw = dict(num_frames=2, **TINY_PREDICTOR)
  x = _tokens((3, 2, 4, 20))
  params = predictor_lib.Predictor(**kw).init(jax.random.key(0), x)
  predictor_lib._WARNED.clear()  # pylint: disable=protected-access
  with pytest.warns(RuntimeWarning, match='falling back') as record:
    outs = {impl: jax.jit(predictor_lib.Predictor(attention_impl=impl, **kw).apply)(params, x)
            for impl in ('xla', 'cudnn', 'auto')}
    jax.jit(predictor_lib.Predictor(attention_impl='cudnn', **kw).apply)(params, x[:1])
  assert len([w for w in record if 'falling back' in str(w.message)]) == 1  # Warned once.
  np.testing.assert_allclose(outs['cudnn'], outs['xla'], atol=1e-6)
  np.testing.assert_allclose(outs['auto'], outs['xla'], atol=1e-6)
  wm = _conv_wm(predictor=dict(TINY_PREDICTOR, attention_impl='auto'))
  assert wm.predictor.attention_impl == 'auto'


def test_pad_width_to_rounds_the_block_width_up():
  assert predictor_lib.block_width(404, None, 128) == 512  # Section 7: 404 -> 512.
  assert predictor_lib.block_width(404, None, 0) == 404
  assert predictor_lib.block_width(404, 200, 128) == 256
  x = _tokens((2, 3, 4, 20))
  shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(m.init, jax.random.key(0), x))
  padded = shapes(predictor_lib.Predictor(num_frames=3, pad_width_to=16, **TINY_PREDICTOR))
  p = padded['params']
  assert p['proj_in']['kernel'] == (20, 32) and p['proj_out']['kernel'] == (32, 20)
  assert p['pos_embedding'] == (12, 32) and p['block_0']['fc2']['kernel'] == (32, 20 + 12)
  exact = shapes(predictor_lib.Predictor(num_frames=3, pad_width_to=10, **TINY_PREDICTOR))
  assert 'proj_in' not in exact['params']  # 20 is a multiple of 10: no projection.
  # A padded world model (conv tokens 6 + 20 = 26 -> 32) runs end to end.
  wm = _conv_wm(predictor=dict(TINY_PREDICTOR, pad_width_to=16))
  params = wm.init(jax.random.key(0), _obs(wm, ()))
  assert params['predictor']['proj_in']['kernel'].shape == (26, 32)
  z0 = jax.tree.map(lambda x: x[0], jax.jit(wm.encode)(params, _obs(wm, (1,))))
  actions = _tokens((4, A), seed=1)
  out = jax.jit(lambda p, z, a: wm.rollout(p, z, a, mode='history'))(params, z0, actions)
  assert out['visual'].shape == (5, 16, 6) and out['proprio'].shape == (5, 10)
  assert np.all(np.isfinite(out['visual'])) and np.all(np.isfinite(out['proprio']))


def test_bfloat16_is_close_to_float32():
  kw = dict(num_frames=3, pad_width_to=16, **TINY_PREDICTOR)
  x = _tokens((4, 3, 4, 20))
  params = predictor_lib.Predictor(**kw).init(jax.random.key(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(params))

  def run(dtype):
    m = predictor_lib.Predictor(dtype=dtype, **kw)
    f = lambda x: m.apply(params, x)
    return f(x), jax.grad(lambda x: jnp.sum(jnp.square(f(x)[:, -1])))(x)

  (y32, g32), (y16, g16) = jax.jit(lambda: (run(jnp.float32), run(jnp.bfloat16)))()
  assert y16.dtype == jnp.float32 and g16.dtype == jnp.float32
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  assert rel(y16, y32) < 0.02, rel(y16, y32)  # bfloat16 keeps ~3 significant digits.
  assert rel(g16, g32) < 0.05, rel(g16, g32)
  assert rel(y16, y32) > 0  # The bfloat16 path really computes in bfloat16.


def test_bad_predictor_options_raise():
  for bad, match in [(dict(attention_impl='flash'), 'attention_impl=.*auto'),
                     (dict(dtype='float16'), "dtype='float16'.*bfloat16"),
                     (dict(dtype='int8'), 'choose one of'),
                     (dict(pad_width_to=-1), 'pad_width_to=-1'),
                     (dict(pad_width_to=1.5), 'pad_width_to=1.5'),
                     (dict(pad_width_to=True), 'pad_width_to=True'),
                     (dict(width=0), 'width=0')]:
    with pytest.raises(ValueError, match=match):
      _conv_wm(predictor=dict(TINY_PREDICTOR, **bad))
    with pytest.raises(ValueError, match=match):
      predictor_lib.Predictor(num_frames=1, **bad).init(jax.random.key(0), _tokens((1, 2, 4)))
