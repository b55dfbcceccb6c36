"""Contract tests of wmjax.training: loss, train step, optimiser groups, checkpoints."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wmjax import checks
from wmjax import models
from wmjax import training
from wmjax.training import checkpoint as ckpt_lib
from wmjax.training import optim

S, P, FS_A, NUM_HIST, B = 2, 2, 10, 2, 8
TINY_PREDICTOR = dict(depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.1)


def model_kwargs(**overrides):
  kw = dict(encoder='identity', state_dim=S, proprio_dim=P, action_dim=FS_A, num_hist=NUM_HIST,
            image_size=8, predictor=dict(TINY_PREDICTOR))
  kw.update(overrides)
  return kw


def train_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      steps=100, predictor_lr=3e-3, encoder_lr=3e-3, weight_decay=0.0, warmup_steps=0,
      lr_schedule='constant', grad_clip=0.0))
  c.update(overrides)
  return c


def toy_batch(key, with_pixels=False, image_size=8):
  ks = jax.random.split(key, 4)
  batch = {
      'state': jax.random.normal(ks[0], (B, NUM_HIST + 1, S)),
      'proprio': jax.random.normal(ks[1], (B, NUM_HIST + 1, P)),
      'actions': jax.random.normal(ks[2], (B, NUM_HIST, FS_A)),
  }
  if with_pixels:
    batch['pixels'] = jax.random.randint(
        ks[3], (B, NUM_HIST + 1, image_size, image_size, 3), 0, 256).astype(jnp.uint8)
  return batch


def build(kw, tc=None, key=0):
  model = models.make_world_model(kw)
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  tx = training.make_optimizer(tc or train_config())
  params = jax.jit(lambda k: model.init(k, obs))(jax.random.key(key))
  return model, tx, training.create_train_state(params, tx)


@pytest.fixture(scope='module')
def identity_setup():
  model, tx, state = build(model_kwargs())
  step = jax.jit(training.make_train_step(training.teacher_forcing_loss(model), tx))
  return model, tx, state, step


def test_train_step_lowers_loss(identity_setup):
  _, _, state, step = identity_setup
  batch = toy_batch(jax.random.key(1))
  losses = []
  for i in range(60):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses[::10]
  assert int(state.step) == 60
  for k in ('loss', 'mse_visual', 'mse_proprio', 'grad_norm', 'param_norm', 'lr/predictor',
            'lr/encoders'):
    assert k in metrics


def test_readout_term_adds_the_probe_error_of_the_prediction(identity_setup):
  model, _, state, _ = identity_setup
  batch = toy_batch(jax.random.key(3))
  matrix = jax.random.normal(jax.random.key(4), (S, 2))  # Identity encoder: one token of S.
  readout = training.losses.Readout(matrix, jnp.array([1.0, 3.0]), 0.5)
  # Jitted: one program per check (kept in the tests' compilation cache), not op by op.
  plain = jax.jit(training.teacher_forcing_loss(model, deterministic=True))
  with_readout = jax.jit(training.teacher_forcing_loss(model, deterministic=True,
                                                       readout=readout))
  loss0, m0 = plain(state.params, state.frozen, batch, jax.random.key(0))
  loss, m = with_readout(state.params, state.frozen, batch, jax.random.key(0))

  @jax.jit
  def predict(params, frozen, batch):
    inputs, targets = training.encode_window(model, params, frozen, batch)
    pred = model.predict_embedded(params, inputs.visual, inputs.proprio, inputs.actions)
    return pred, targets

  pred, targets = predict(state.params, state.frozen, batch)
  diff = (pred['visual'] - targets.visual).reshape(B, NUM_HIST, -1) @ matrix
  per_feature = jnp.mean(jnp.square(diff), axis=(0, 1))
  expected = (per_feature[0] + 3.0 * per_feature[1]) / 4.0
  np.testing.assert_allclose(m['readout_mse'], expected, rtol=1e-5)
  np.testing.assert_allclose(m['loss'], m0['loss'], rtol=1e-6)  # metrics['loss']: latent MSE.
  np.testing.assert_allclose(loss, loss0 + 0.5 * expected, rtol=1e-5)
  assert float(m['readout_mse']) > 0 and 'readout_mse' not in m0
  # The term reaches the predictor's gradient.
  grad = lambda fn: jax.jit(jax.grad(lambda p: fn(p, state.frozen, batch, jax.random.key(0))[0]))(
      state.params)
  g0, g = grad(plain), grad(with_readout)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g)))


def test_loss_is_token_mse_without_action_channels(identity_setup):
  model, _, state, _ = identity_setup
  batch = toy_batch(jax.random.key(2))
  loss_fn = training.teacher_forcing_loss(model, deterministic=True)

  @jax.jit
  def run(params, frozen, batch):
    loss, metrics = loss_fn(params, frozen, batch, jax.random.key(0))
    inputs, targets = training.encode_window(model, params, frozen, batch)
    pred = model.predict_embedded(params, inputs.visual, inputs.proprio, inputs.actions)
    z = model.encode({**params, **frozen}, batch)
    return loss, metrics, inputs, targets, pred, z

  loss, metrics, inputs, targets, pred, z = run(state.params, state.frozen, batch)

  # DINO-WM: MSE over each token's [visual | tiled proprio] features; the action channels
  # (here filled with unrelated values in prediction and target) must not count.
  def tokens(visual, proprio, action_fill):
    n = visual.shape[-2]
    tile = lambda e: jnp.broadcast_to(e[..., None, :], (*e.shape[:-1], n, e.shape[-1]))
    act = jnp.full((*visual.shape[:-1], 10), action_fill)
    return jnp.concatenate([visual, tile(proprio), act], -1)

  pt = tokens(pred['visual'], pred['proprio'], 100.0)
  tt = tokens(targets.visual, targets.proprio, -100.0)
  expected = jnp.mean(jnp.square(pt[..., :-10] - tt[..., :-10]))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['mse_proprio'],
                             jnp.mean(jnp.square(pred['proprio'] - targets.proprio)), rtol=1e-5)
  # Targets are frame 1..T of the encoded window, inputs frames 0..T-1.
  np.testing.assert_array_equal(targets.visual, z['visual'][:, 1:])
  np.testing.assert_array_equal(inputs.visual, z['visual'][:, :-1])


def test_loss_rejects_window_mismatch(identity_setup):
  model, _, state, _ = identity_setup
  batch = toy_batch(jax.random.key(2))
  batch['actions'] = batch['actions'][:, :1]
  with pytest.raises(ValueError, match='T\\+1 frames'):
    training.teacher_forcing_loss(model)(state.params, state.frozen, batch, jax.random.key(0))


def test_targets_carry_no_gradient(identity_setup):
  """d loss / d targets' proprio embedding is cut: only the inputs train the proprio encoder."""
  model, _, state, _ = identity_setup
  batch = toy_batch(jax.random.key(3))

  def target_only(params):
    _, targets = training.encode_window(model, params, state.frozen, batch)
    return jnp.sum(targets.proprio) + jnp.sum(targets.visual)

  grads = jax.jit(jax.grad(target_only))(state.params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_frozen_encoder_never_changes():
  kw = model_kwargs(encoder='conv', image_size=8,
                    conv=dict(channels=(4,), token_dim=4, normalize_tokens=True))
  model, tx, state = build(kw)
  assert set(state.frozen) == {'encoder'} and 'encoder' not in state.params
  before = jax.device_get(state)
  step = jax.jit(training.make_train_step(training.teacher_forcing_loss(model), tx))
  for i in range(2):
    state, _ = step(state, toy_batch(jax.random.key(i), with_pixels=True), jax.random.key(i))
  jax.tree.map(np.testing.assert_array_equal, before.frozen, jax.device_get(state.frozen))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before.params,
                         jax.device_get(state.params))
  assert all(jax.tree.leaves(changed))


def test_encoder_passed_as_trainable_is_not_updated():
  params = {'encoder': {'w': jnp.ones(3)}, 'predictor': {'w': jnp.ones(3)}}
  tx = training.make_optimizer(train_config())
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates['encoder']['w']).max()) == 0.0
  assert float(jnp.abs(updates['predictor']['w']).max()) > 0.0


@pytest.mark.parametrize('pred_lr,enc_lr', [(0.0, 1e-2), (1e-2, 0.0)])
def test_separate_learning_rates(pred_lr, enc_lr):
  model, tx, state = build(model_kwargs(), train_config(predictor_lr=pred_lr, encoder_lr=enc_lr))
  step = training.make_train_step(training.teacher_forcing_loss(model), tx)
  new, metrics = jax.jit(step)(state, toy_batch(jax.random.key(0)), jax.random.key(0))
  np.testing.assert_allclose(metrics['lr/predictor'], pred_lr)
  np.testing.assert_allclose(metrics['lr/encoders'], enc_lr)
  for group, lr in (('predictor', pred_lr), ('proprio_encoder', enc_lr),
                    ('action_encoder', enc_lr)):
    same = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                        state.params[group], new.params[group]))
    assert all(same) == (lr == 0.0), group


def test_schedule_warmup_then_cosine():
  params = {'predictor': {'w': jnp.ones(2)}, 'action_encoder': {'w': jnp.ones(2)}}
  tx = training.make_optimizer(train_config(steps=10, warmup_steps=4, lr_schedule='cosine',
                                            grad_clip=1.0))

  def step(opt_state, _):
    _, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    return opt_state, training.learning_rates(opt_state)['lr/predictor']

  _, lrs = jax.jit(lambda s: jax.lax.scan(step, s, None, length=10))(tx.init(params))
  lrs = np.asarray(lrs)
  assert lrs[0] == 0.0 and lrs[1] < lrs[3]
  np.testing.assert_allclose(lrs[4], 3e-3, rtol=1e-5)  # Peak after warmup.
  assert lrs[-1] < lrs[5] < lrs[4]


def test_optimizer_rejects_bad_settings():
  with pytest.raises(ValueError, match='Unknown parameter groups'):
    tx = training.make_optimizer(train_config())
    tx.init({'decoder': {'w': jnp.ones(2)}})
  with pytest.raises(ValueError, match='lr schedule'):
    training.make_optimizer(train_config(lr_schedule='linear'))
  with pytest.raises(ValueError, match='grad_clip'):
    training.make_optimizer(train_config(grad_clip=-1.0))


# ----------------------------------------------------------------------------- checkpoints


def toy_state(width=3, step=0):
  params = {'predictor': {'w': jnp.arange(width, dtype=jnp.float32)},
            'action_encoder': {'b': jnp.ones((2, 2))}}
  tx = training.make_optimizer(train_config())
  state = training.create_train_state({**params, 'encoder': {'k': jnp.full((2,), 7.0)}}, tx)
  grads = jax.tree.map(jnp.ones_like, state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=jnp.int32(step), params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state)


META = {'task': 'wall', 'model_config': {'task': 'wall', 'model_kwargs': {'encoder': 'identity'}},
        'dataset_fingerprint': 'abc'}


def test_checkpoint_round_trip(tmp_path):
  state = toy_state(step=5)
  ck = training.Checkpointer(str(tmp_path), keep=2)
  assert ck.save(state, META, val_loss=1.5)
  ck.wait()
  restored, meta = ck.restore(jax.eval_shape(lambda: toy_state()), expected_meta=META)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  assert meta['step'] == 5 and meta['val_loss'] == 1.5 and meta['task'] == 'wall'
  assert meta['shapes']['params/predictor/w'] == [3]
  assert not ck.save(state, META)  # The same step is not written twice.
  ck.close()


def test_mismatched_checkpoint_gives_clear_error(tmp_path):
  ck = training.Checkpointer(str(tmp_path))
  ck.save(toy_state(step=1), META)
  ck.wait()
  other = dict(META, task='pusht', model_config={'task': 'pusht', 'model_kwargs': {
      'encoder': 'conv'}})
  with pytest.raises(ValueError, match=r"(?s)task: checkpoint has 'wall', expected 'pusht'.*"
                     r"model_config.model_kwargs.encoder"):
    ck.restore(toy_state(), expected_meta=other)
  with pytest.raises(ValueError, match=r'params/predictor/w: checkpoint shape \[3\], model shape '
                     r'\[5\]'):
    ck.restore(toy_state(width=5), expected_meta=META)
  ck.close()


def test_keep_last_k_and_best(tmp_path):
  ck = training.Checkpointer(str(tmp_path), keep=2)
  saved_best = []
  for step, loss in zip(range(1, 6), (3.0, 1.0, 2.0, 1.0, 4.0)):
    state = toy_state(step=step)
    ck.save(state, META, val_loss=loss)
    saved_best.append(ck.save_if_best(state, META, loss))
  ck.wait()
  assert ck.steps('latest') == [4, 5]
  assert ck.steps('best') == [2] and ck.best_val_loss() == 1.0
  assert saved_best == [True, True, False, False, False]  # A tie is not an improvement.
  restored, meta = ck.restore(toy_state(), which='best')
  assert int(restored.step) == 2 and meta['val_loss'] == 1.0
  ck.close()
  # A new Checkpointer (a restarted run) sees the same steps and best loss.
  again = training.Checkpointer(str(tmp_path), keep=2)
  assert again.latest_step() == 5 and again.best_val_loss() == 1.0
  again.close()


def test_unfinished_checkpoint_is_never_restored(tmp_path):
  ck = training.Checkpointer(str(tmp_path), keep=3)
  ck.save(toy_state(step=3), META)
  ck.close()
  # What a save killed before orbax's final rename leaves behind.
  junk = tmp_path / 'checkpoints' / '9.orbax-checkpoint-tmp' / 'state'
  junk.mkdir(parents=True)
  (junk / 'garbage').write_text('half written')
  again = training.Checkpointer(str(tmp_path), keep=3)
  assert again.steps() == [3]
  restored, _ = again.restore(toy_state())
  assert int(restored.step) == 3
  again.save(toy_state(step=9), META)  # The step can be written again, cleanly.
  again.wait()
  assert again.steps() == [3, 9]
  again.close()


def test_load_world_model(tmp_path):
  kw = model_kwargs()
  model, _, state = build(kw)
  config = ml_collections.ConfigDict({'task': 'wall', 'frameskip': 5})
  meta = training.make_meta(config, model_kwargs=kw, dataset_fingerprint='d')
  ck = training.Checkpointer(str(tmp_path / 'world_model'))
  ck.save(state, meta)
  ck.close()
  loaded, params, lmeta = training.load_world_model(str(tmp_path))
  assert loaded == model
  jax.tree.map(np.testing.assert_array_equal, params,
               jax.device_get(training.full_params(state)))
  assert lmeta['dataset_fingerprint'] == 'd' and lmeta['step'] == 0
  with pytest.raises(ValueError, match='No world-model checkpoints'):
    training.load_world_model(str(tmp_path / 'nowhere'))


def test_metric_writer(tmp_path):
  w = training.MetricWriter(str(tmp_path), tensorboard=False)
  for s in (1, 2, 3):
    w.write(s, {'loss': np.float32(s), 'bad': float('nan')})
  w.truncate_after(2)
  recs = training.read_metrics(str(tmp_path))
  assert [r['step'] for r in recs] == [1, 2] and recs[0]['bad'] is None
  assert json.loads(open(os.path.join(tmp_path, 'metrics.jsonl')).readline())['split'] == 'train'


def test_train_step_refuses_nonfinite_steps(identity_setup):
  model, tx, state, _ = identity_setup
  step = jax.jit(training.make_train_step(training.teacher_forcing_loss(model), tx))
  batch = toy_batch(jax.random.key(1))
  new, metrics = step(state, batch, jax.random.key(0))
  assert int(metrics['nonfinite']) == 0 and int(new.step) == 1
  bad = dict(batch, state=batch['state'].at[0, 0, 0].set(jnp.nan))
  same, metrics = step(state, bad, jax.random.key(0))
  assert int(metrics['nonfinite']) == 1 and not np.isfinite(float(metrics['loss']))
  # The state is unchanged (step count included): nothing non-finite gets in.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(same), jax.device_get(state))
  with pytest.raises(checks.NonFiniteError, match=r'Training stopped at step 7: non-finite loss '
                     r'or gradient \(loss=nan.*newest checkpoint is step 5 in /ck. Lower lr'):
    training.raise_if_nonfinite(7, metrics, last_saved=5, directory='/ck', hint='Lower lr.')
  training.raise_if_nonfinite(7, {'nonfinite': 0, 'loss': 1.0}, last_saved=5, directory='/ck')


def test_checkpointer_never_saves_nonfinite_values(tmp_path):
  ck = training.Checkpointer(str(tmp_path))
  state = toy_state(step=1)
  nan_state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
  with pytest.raises(checks.NonFiniteError, match=r'Refusing to save a non-finite state at step 1 '
                     r'\(latest\): params/action_encoder/b'):
    ck.save(nan_state, META)
  assert not ck.save_if_best(state, META, float('nan'))  # A NaN loss is never "best".
  ck.wait()
  assert ck.steps() == [] and ck.steps('best') == []
  ck.close()


def test_checkpoint_checksums_catch_damage(tmp_path):
  ck = training.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2):
    ck.save(toy_state(step=step), META)
  ck.wait()
  meta = ck.read_meta()
  assert set(meta['integrity']['state']) >= {'params/predictor/w', 'step'}
  assert meta['meta_sha256'] == ckpt_lib.meta_digest(meta)
  # An edited meta item (here its validation loss) fails its checksum.
  path = tmp_path / 'checkpoints' / '2' / 'meta' / 'metadata'
  raw = json.loads(path.read_text())
  path.write_text(json.dumps(dict(raw, val_loss=0.001)))
  with pytest.raises(training.CorruptCheckpointError, match=r'checkpoints/2/meta is corrupt'):
    ck.read_meta()
  with pytest.raises(training.CorruptCheckpointError, match=r'checkpoints/2/meta'):
    ck.restore(toy_state())  # Without fallback: an error naming the item.
  with pytest.warns(training.CorruptCheckpointWarning, match='falling back to step 1'):
    restored, meta = ck.restore(toy_state(), fallback=True)
  assert int(restored.step) == 1 and ck.steps() == [1]
  assert os.path.isdir(tmp_path / 'corrupt' / 'checkpoints-2')
  # Another configuration's optimiser state is a mismatch, not damage: never skipped.
  other = training.create_train_state(
      {**toy_state().params, 'encoder': {'k': jnp.zeros(2)}}, optax.sgd(0.1))
  with pytest.raises(ValueError, match=r'does not match the training state \(optimiser or extra '
                     'state of another configuration\\)'):
    ck.restore(other, fallback=True)
  assert ck.steps() == [1]
  ck.close()


def test_settings_diff_names_every_field():
  stored = {'config': {'seed': 0, 'train': {'predictor_lr': 5e-4, 'steps': 10}}}
  config = ml_collections.ConfigDict({'seed': 1, 'train': {'predictor_lr': 5e-4, 'steps': 20}})
  with pytest.raises(ValueError, match=r'(?s)seed: checkpoint has 0, this run 1.*train.steps: '
                     r'checkpoint has 10, this run 20.*--accept_changed_settings'):
    training.check_settings(stored, config, keys=('seed', 'train'))
  assert training.check_settings(stored, config, keys=('seed', 'train'), accept=True) == [
      'seed: checkpoint has 0, this run 1', 'train.steps: checkpoint has 10, this run 20']


def test_setting_added_since_the_checkpoint_matches_only_when_off():
  stored = {'config': {'train': {'steps': 10}}}  # Written before train.init_from existed.
  for off in ('', None, False, 0, 0.0):  # E.g. train.predictor_readout_weight 0: off.
    config = ml_collections.ConfigDict({'train': {'steps': 10, 'init_from': off}})
    assert training.check_settings(stored, config, keys=('train',)) == []
  for on in ('/runs/base/world_model', 0.5, True):
    config = ml_collections.ConfigDict({'train': {'steps': 10, 'init_from': on}})
    assert training.check_settings(stored, config, keys=('train',), accept=True) == [
        f"train.init_from: checkpoint has '<missing>', this run {on!r}"]


def test_setting_added_with_a_default_matches_what_older_runs_did():
  stored = {'config': {'finetune': {'online': {'lr': 0.1}}}}  # Before online.planner existed.
  keys = ('finetune',)
  adam = ml_collections.ConfigDict({'finetune': {'online': {'lr': 0.1, 'planner': 'adam'}}})
  assert training.check_settings(stored, adam, keys=keys) == []  # What OWM planned with then.
  cem = ml_collections.ConfigDict({'finetune': {'online': {'lr': 0.1, 'planner': 'cem'}}})
  assert training.check_settings(stored, cem, keys=keys, accept=True) == [
      "finetune.online.planner: checkpoint has '<missing>', this run 'cem'"]
