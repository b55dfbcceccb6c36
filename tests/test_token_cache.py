"""The frozen encoder's token cache: the same windows, tokens and training steps as encoding
every batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wmjax import data as data_lib
from wmjax import envs
from wmjax import models
from wmjax import training
from wmjax.data import loader
from wmjax.training import iterations

IMAGE, NUM_HIST, FRAMESKIP, BATCH = 16, 2, 2, 6


@pytest.fixture(scope='module')
def setup():
  env = envs.load('wall')
  model = models.make_world_model(dict(
      encoder='conv', image_size=IMAGE, proprio_dim=env.proprio_size,
      action_dim=FRAMESKIP * env.action_size, num_hist=NUM_HIST,
      conv=dict(channels=(4, 4), token_dim=4, normalize_tokens=True),
      predictor=dict(depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.1)))
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = model.init(jax.random.key(0), obs)
  rng = np.random.default_rng(0)
  n, t = 3, 9  # 3 x 10 = 30 frames: chunks of 7 leave a padded last chunk.
  states = jnp.asarray(rng.uniform(4, 60, (n, t + 1, env.state_size)), jnp.float32)
  arrays = loader.WindowArrays(states, states, jnp.asarray(rng.normal(size=(n, t, 2)),
                                                           jnp.float32),
                               loader.nominal_stats(env))
  return env, model, params, arrays


def test_cached_tokens_are_the_encoders_tokens_of_each_window(setup):
  env, model, params, arrays = setup
  cached = training.add_tokens(model, params, arrays, env, IMAGE, chunk=7)
  spec = model.latent_spec
  assert cached.visual.shape == (*arrays.states.shape[:2], spec.num_tokens, spec.visual_dim)
  key = jax.random.key(1)
  batch = data_lib.sample_windows(cached, key, BATCH, NUM_HIST, FRAMESKIP)
  plain = data_lib.sample_windows(arrays, key, BATCH, NUM_HIST, FRAMESKIP)
  assert set(batch) == set(plain) | {'visual'}
  jax.tree.map(np.testing.assert_array_equal, {k: batch[k] for k in plain}, plain)
  rendered = loader.add_pixels(env, plain, IMAGE)
  np.testing.assert_allclose(batch['visual'], model.encode(params, rendered)['visual'],
                             atol=1e-5)


def test_training_steps_match_with_and_without_the_cache(setup):
  env, model, params, arrays = setup
  cached = training.add_tokens(model, params, arrays, env, IMAGE)
  windows = iterations.Windows(env, NUM_HIST, FRAMESKIP, IMAGE, pixels=True)
  tx = training.make_optimizer(ml_collections.ConfigDict(dict(
      predictor_lr=1e-3, encoder_lr=1e-3, weight_decay=0.0, warmup_steps=0, steps=10,
      lr_schedule='constant', grad_clip=0.0)))
  step = iterations.teacher_forcing_iteration(model, tx, windows, BATCH,
                                              iterations.Streams(0, 1)).step
  root = jax.random.key(2)
  out = {}
  for name, a in (('plain', arrays), ('cached', cached)):
    state = training.create_train_state(jax.tree.map(jnp.copy, params), tx)
    losses = []
    for _ in range(2):
      state, metrics = step(state, a, root)
      losses.append(float(metrics['loss']))
    out[name] = (losses, jax.device_get(state.params))
  np.testing.assert_allclose(out['cached'][0], out['plain'][0], rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), out['cached'][1],
               out['plain'][1])


def test_cache_only_for_pixels_and_within_its_budget(setup):
  env, model, params, arrays = setup
  size = training.token_cache.cache_bytes(model, arrays) / 1e9
  same, note = training.maybe_add_tokens(model, params, arrays, env, IMAGE, max_gb=0.0)
  assert same.visual is None and 'no token cache' in note and 'token_cache_gb=0' in note
  cached, note = training.maybe_add_tokens(model, params, arrays, env, IMAGE, max_gb=size * 2)
  assert cached.visual is not None and note.startswith('token cache: 30 frames')
  state_model = models.make_world_model(dict(
      encoder='identity', state_dim=env.state_size, proprio_dim=env.proprio_size,
      action_dim=FRAMESKIP * env.action_size, num_hist=NUM_HIST))
  same, note = training.maybe_add_tokens(state_model, params, arrays, env, IMAGE, max_gb=1.0)
  assert same.visual is None and "reads 'state'" in note
  with pytest.raises(ValueError, match='renders pixels'):
    training.add_tokens(state_model, params, arrays, env, IMAGE)
