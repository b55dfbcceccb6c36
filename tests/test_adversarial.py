"""Contract tests of adversarial world modelling (PAPER.md section 4) and stateful train steps."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wmjax import models
from wmjax import training

S, P, FS_A, NUM_HIST, B = 2, 2, 10, 2, 8
TINY_PREDICTOR = dict(depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.1)
GROUPS = ('visual', 'proprio', 'actions')


def train_config():
  return ml_collections.ConfigDict(dict(
      steps=100, predictor_lr=3e-3, encoder_lr=3e-3, weight_decay=0.0, warmup_steps=0,
      lr_schedule='constant', grad_clip=0.0))


def toy_batch(key, scale=1.0):
  ks = jax.random.split(key, 3)
  return {
      'state': scale * jax.random.normal(ks[0], (B, NUM_HIST + 1, S)),
      'proprio': scale * jax.random.normal(ks[1], (B, NUM_HIST + 1, P)),
      'actions': scale * jax.random.normal(ks[2], (B, NUM_HIST, FS_A)),
  }


@pytest.fixture(scope='module')
def setup():
  model = models.make_world_model(dict(
      encoder='identity', state_dim=S, proprio_dim=P, action_dim=FS_A, num_hist=NUM_HIST,
      image_size=8, predictor=dict(TINY_PREDICTOR)))
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  tx = training.make_optimizer(train_config())
  params = jax.jit(lambda k: model.init(k, obs))(jax.random.key(0))
  return model, tx, training.create_train_state(params, tx)


def awm_state(model, tx, state, batch, config):
  extra = jax.jit(lambda p, f, b: training.init_extra(model, p, f, b, config))(
      state.params, state.frozen, batch)
  return state.replace(extra=extra)


# ----------------------------------------------------------------------------- the attack


@pytest.mark.parametrize('random_start,num_steps', [(False, 1), (True, 1), (True, 3)])
def test_attack_stays_in_ball_moves_every_group_and_raises_loss(setup, random_start, num_steps):
  model, _, state = setup
  config = training.AdversarialConfig(random_start=random_start, num_steps=num_steps)

  @jax.jit
  def run(params, frozen, batch, key):
    inputs, targets = training.encode_window(model, params, frozen, batch)
    radii = training.compute_radii(inputs, config)
    loss = lambda x, k: training.predict_loss(model, params, x, targets, k, deterministic=True)[0]
    adv = training.attack(loss, inputs, radii, key, config)
    mirrored = jax.tree.map(lambda x, a: 2 * x - a, inputs, adv)  # inputs - delta.
    return inputs, adv, radii, loss(inputs, key), loss(adv, key), loss(mirrored, key)

  for i in range(3):
    inputs, adv, radii, clean, attacked, mirrored = run(
        state.params, state.frozen, toy_batch(jax.random.key(10 + i)), jax.random.key(i))
    assert isinstance(adv, training.PredictorInputs)
    for group in GROUPS:
      x, a, eps = getattr(inputs, group), getattr(adv, group), float(getattr(radii, group))
      lam = getattr(config, 'lambda_action' if group == 'actions' else f'lambda_{group}')
      np.testing.assert_allclose(eps, lam * np.std(np.asarray(x)), rtol=1e-5)
      assert a.shape == x.shape and eps > 0
      delta = np.abs(np.asarray(a) - np.asarray(x))
      assert delta.max() <= eps * (1 + 1e-5) + 1e-7, (group, delta.max(), eps)
      assert delta.max() > 0.5 * eps, (group, delta.max(), eps)
      if not random_start:
        # One FGSM step from zero with step 1.25 eps lands on the ball's surface (sign(g) != 0).
        assert np.mean(np.isclose(delta, eps, rtol=1e-4)) > 0.9, group
    assert float(attacked) > float(clean), (i, float(attacked), float(clean))
    if not random_start and num_steps == 1:
      # The ascent direction raises the loss, the opposite one lowers it (first order).
      assert float(mirrored) < float(clean) < float(attacked)


# ----------------------------------------------------------------------------- the loss / step


def test_zero_lambdas_give_the_plain_step_bit_for_bit(setup):
  model, tx, state = setup
  config = training.AdversarialConfig(lambda_visual=0.0, lambda_proprio=0.0, lambda_action=0.0)
  plain = jax.jit(training.make_train_step(training.teacher_forcing_loss(model), tx))
  awm = jax.jit(training.make_train_step(training.adversarial_loss(model, config), tx,
                                         stateful=True))
  s_plain = state
  s_awm = awm_state(model, tx, state, toy_batch(jax.random.key(0)), config)
  for i in range(3):
    batch, key = toy_batch(jax.random.key(20 + i)), jax.random.key(30 + i)
    s_plain, m_plain = plain(s_plain, batch, key)
    s_awm, m_awm = awm(s_awm, batch, key)
    for k in m_plain:
      np.testing.assert_array_equal(m_awm[k], m_plain[k], err_msg=k)
    assert float(m_awm['adv/eps_visual']) == 0.0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(s_awm.params),
               jax.device_get(s_plain.params))


def test_first_batch_radii_stay_fixed_and_training_lowers_loss(setup):
  model, tx, state = setup
  config = training.AdversarialConfig()
  state = awm_state(model, tx, state, toy_batch(jax.random.key(0)), config)
  radii0 = jax.device_get(state.extra['radii'])
  assert isinstance(radii0, training.Radii) and all(float(r) > 0 for r in radii0)
  step = jax.jit(training.make_train_step(training.adversarial_loss(model, config), tx,
                                          stateful=True))
  batch = toy_batch(jax.random.key(1))
  losses = []
  for i in range(40):
    state, metrics = step(state, toy_batch(jax.random.key(2), 3.0) if i == 5 else batch,
                          jax.random.key(i))
    losses.append(float(metrics['loss']))
    np.testing.assert_array_equal(metrics['adv/eps_proprio'], radii0.proprio)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.extra['radii']), radii0)
  assert int(state.step) == 40 and np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_per_batch_radii_follow_the_batch(setup):
  model, tx, state = setup
  config = training.AdversarialConfig(radii='per_batch')
  step = jax.jit(training.make_train_step(training.adversarial_loss(model, config), tx,
                                          stateful=True))
  radii_of = jax.jit(lambda p, f, b: training.compute_radii(
      training.encode_window(model, p, f, b)[0], config))
  # init_extra(...) == {'radii': radii_of(...)}; it fixes the structure of the state's extra.
  state = state.replace(extra={'radii': radii_of(state.params, state.frozen,
                                                 toy_batch(jax.random.key(0)))})
  seen = []
  for i, scale in enumerate((1.0, 3.0)):
    batch = toy_batch(jax.random.key(40 + i), scale)
    expected = radii_of(state.params, state.frozen, batch)  # Radii of the params before the step.
    state, metrics = step(state, batch, jax.random.key(i))
    got = jax.device_get(state.extra['radii'])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)
    np.testing.assert_allclose(metrics['adv/eps_action'], got.actions, rtol=1e-6)
    seen.append(got)
  for a, b in zip(*seen):
    assert float(b) > 2.0 * float(a)  # The scaled batch has about 3x the std in every group.


def test_loss_is_perturbed_input_against_clean_target_and_clean_weight_mixes(setup):
  model, _, state = setup
  # Deterministic loss and no random start: the attack is a fixed function we can replay.
  config = training.AdversarialConfig(random_start=False, clean_weight=0.3)
  loss_fn = training.adversarial_loss(model, config, deterministic=True)
  batch = toy_batch(jax.random.key(5))

  @jax.jit
  def run(params, frozen, extra, key):
    loss, (metrics, new_extra) = loss_fn(params, frozen, batch, key, extra)
    inputs, targets = training.encode_window(model, params, frozen, batch)
    of = lambda x, k: training.predict_loss(model, params, x, targets, k, deterministic=True)[0]
    adv = training.attack(of, inputs, extra['radii'], key, config)
    plain, _ = training.teacher_forcing_loss(model, deterministic=True)(params, frozen, batch, key)
    return loss, metrics, new_extra, of(adv, key), plain

  extra = training.init_extra(model, state.params, state.frozen, batch, config)
  loss, metrics, new_extra, replayed, plain = run(state.params, state.frozen, extra,
                                                  jax.random.key(0))
  np.testing.assert_allclose(metrics['loss'], replayed, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_clean'], plain, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.7 * metrics['loss'] + 0.3 * metrics['loss_clean'], rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_total'], loss, rtol=1e-6)
  assert float(plain) < float(loss) < float(metrics['loss'])  # The attack raised the loss.
  jax.tree.map(np.testing.assert_array_equal, new_extra['radii'], extra['radii'])


def test_first_batch_mode_needs_radii_in_extra(setup):
  model, _, state = setup
  loss_fn = training.adversarial_loss(model, training.AdversarialConfig())
  with pytest.raises(ValueError, match='init_extra'):
    loss_fn(state.params, state.frozen, toy_batch(jax.random.key(0)), jax.random.key(0), {})


@pytest.mark.parametrize('field,value,message', [
    ('lambda_visual', -0.1, r'lambda_visual must be >= 0'),
    ('lambda_proprio', -1.0, r'lambda_proprio must be >= 0'),
    ('lambda_action', float('nan'), r'lambda_action must be >= 0'),
    ('step_size', 0.0, r'step_size must be > 0'),
    ('num_steps', 0, r'num_steps must be an integer >= 1'),
    ('num_steps', 1.5, r'num_steps must be an integer >= 1'),
    ('radii', 'per_step', r"radii must be one of \('first_batch', 'per_batch'\)"),
    ('clean_weight', 1.5, r'clean_weight must be in \[0, 1\]'),
    ('clean_weight', -0.1, r'clean_weight must be in \[0, 1\]'),
])
def test_bad_config_raises(field, value, message):
  with pytest.raises(ValueError, match=message):
    training.AdversarialConfig(**{field: value})


def test_config_is_static_and_hashable():
  a, b = training.AdversarialConfig(), training.AdversarialConfig()
  assert a == b and hash(a) == hash(b)
  assert (a.lambda_visual, a.lambda_proprio, a.lambda_action, a.step_size, a.num_steps,
          a.radii, a.clean_weight, a.random_start) == (0.05, 0.02, 0.02, 1.25, 1, 'first_batch',
                                                       0.0, True)


# ----------------------------------------------------------------------------- stateful steps


def test_stateful_step_passes_and_returns_extra():
  tx = training.make_optimizer(train_config())
  params = {'predictor': {'w': jnp.ones(3)}}

  def loss_fn(params, frozen, batch, key, extra):
    del frozen, key  # Unused.
    loss = jnp.sum(jnp.square(params['predictor']['w'] - batch['x'])) * extra['scale']
    new_extra = {'scale': extra['scale'], 'count': extra['count'] + 1}
    return loss, ({'loss': loss}, new_extra)

  state = training.create_train_state(params, tx, extra={'scale': jnp.float32(2.0),
                                                         'count': jnp.int32(0)})
  step = jax.jit(training.make_train_step(loss_fn, tx, stateful=True))
  batch = {'x': jnp.zeros(3)}
  new, metrics = step(state, batch, jax.random.key(0))
  new, metrics = step(new, batch, jax.random.key(1))
  assert int(new.extra['count']) == 2 and float(new.extra['scale']) == 2.0
  assert float(metrics['loss']) < 6.0  # Trained (from 2 * 3 = 6) and the extra was used.
  assert 'grad_norm' in metrics and 'lr/predictor' in metrics

  eval_metrics = jax.jit(training.make_eval_step(loss_fn, stateful=True))(
      new, batch, jax.random.key(0))
  np.testing.assert_allclose(eval_metrics['loss'],
                             2.0 * jnp.sum(jnp.square(new.params['predictor']['w'])), rtol=1e-6)


def test_plain_step_leaves_extra_alone():
  tx = training.make_optimizer(train_config())
  state = training.create_train_state({'predictor': {'w': jnp.ones(3)}}, tx,
                                      extra={'tag': jnp.float32(7.0)})

  def loss_fn(params, frozen, batch, key):  # The four-argument signature.
    del frozen, batch, key  # Unused.
    loss = jnp.sum(jnp.square(params['predictor']['w']))
    return loss, {'loss': loss}

  new, metrics = jax.jit(training.make_train_step(loss_fn, tx))(state, {}, jax.random.key(0))
  assert float(new.extra['tag']) == 7.0 and int(new.step) == 1
  assert float(jnp.sum(jnp.square(new.params['predictor']['w']))) < float(metrics['loss'])
  assert set(training.make_eval_step(loss_fn)(new, {}, jax.random.key(0))) == {'loss'}
