"""The world-model training binary: end to end on Wall's `test` config, kill + resume, bad input."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.configs import wall
import fakes
from limits import TIMEOUT_S
from wmjax import checks
from wmjax import io
from wmjax import training
from wmjax.data import dataset as dataset_lib
from wmjax.experiment import evaluation as evaluation_lib
from wmjax.experiment import generate
from wmjax.experiment import layout
from wmjax.experiment import train as train_lib
from wmjax.training import pretrain as pretrain_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, 'experiments', 'train_world_model.py')
# Long enough that a kill after the first checkpoint lands mid-run; every 20 steps a validation
# and a checkpoint (the last 2 kept).
OVERRIDES = dict(steps=300, checkpoint_every=20, eval_every=20, log_every=20, keep=2)


def make_config(**train):
  c = wall.get_config('test')
  c.train.update(dict(OVERRIDES, **train))
  return c


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('wall_data'))
  generate.generate(wall.get_config('test'), workdir, progress=False, preview=False)
  return os.path.join(workdir, layout.DATASET_DIR)


def fresh_workdir(tmp_path, dataset_dir, name):
  workdir = str(tmp_path / name)
  shutil.copytree(dataset_dir, os.path.join(workdir, layout.DATASET_DIR))
  return workdir


def launch(workdir):
  cmd = [sys.executable, BINARY, '--config', os.path.join(ROOT, 'experiments/configs/wall.py:test'),
         '--workdir', workdir] + [f'--config.train.{k}={v}' for k, v in OVERRIDES.items()]
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             WMJAX_JAX_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT)


def final_state(workdir):
  ck = training.Checkpointer(os.path.join(workdir, layout.WORLD_MODEL_DIR))
  try:
    state, meta = ck.restore_raw('latest')
  finally:
    ck.close()
  return jax.device_get(state), meta


def conv_config(**train):
  c = make_config(**dict(dict(steps=2, checkpoint_every=2, eval_every=2, encoder_pretrain_steps=3,
                              encoder_pretrain_images=16, encoder_pretrain_batch_size=4), **train))
  c.model.encoder = 'conv'
  c.model.conv.channels = (4, 4, 4, 4)  # 64 px -> 4 x 4 tokens.
  c.model.conv.token_dim = 4
  return c


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, dataset_dir):
  # Uninterrupted reference run, in process.
  ref_dir = fresh_workdir(tmp_path, dataset_dir, 'ref')
  summary = train_lib.train_and_evaluate(make_config(), ref_dir, progress=False)
  assert summary['steps'] == 300 and summary['resumed_from'] is None
  out = os.path.join(ref_dir, layout.WORLD_MODEL_DIR)
  records = training.read_metrics(out)
  assert {r['split'] for r in records} == {'train', 'val'}
  assert os.listdir(os.path.join(out, 'tensorboard'))
  evaluation = json.load(open(os.path.join(out, layout.EVAL_FILE)))
  assert evaluation['horizon'] == 4  # Test trajectories hold 20 steps = 4 model actions.
  # The linear probe: the identity encoder's visual token is the state, read exactly.
  assert set(evaluation['probe_r2']) == {'x', 'y'} == set(evaluation['probe_r2_with_proprio'])
  assert min(evaluation['probe_r2'].values()) > 0.99
  assert set(evaluation['probe_rmse']) == {'x', 'y'}  # In the state's units.
  assert evaluation['probe']['test_frames'] == 21  # The one held-out trajectory's frames.
  motion = evaluation['probe_motion']  # The change over 4 model steps, read the same way:
  assert (motion['horizon'], motion['windows']) == (4, 1)  # one window, so no R^2 (no spread).
  assert motion['encoder'] == {'x': None, 'y': None} == motion['markov'] == motion['history']
  for mode in evaluation_lib.ROLLOUT_MODES:
    assert len(evaluation['errors'][mode]['model']['loss']) == 4
  assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == ['280', '300']
  ref_state, ref_meta = final_state(ref_dir)
  assert ref_meta['step'] == 300

  # Killed after its first checkpoint, then restarted.
  run_dir = fresh_workdir(tmp_path, dataset_dir, 'run')
  first = os.path.join(run_dir, layout.WORLD_MODEL_DIR, 'checkpoints', '20')
  proc = launch(run_dir)
  deadline = time.time() + TIMEOUT_S
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not os.path.exists(os.path.join(run_dir, layout.WORLD_MODEL_DIR, layout.EVAL_FILE))
  ckpts = os.path.join(run_dir, layout.WORLD_MODEL_DIR, 'checkpoints')
  done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert done and done[-1] < 300
  # What a save killed before its final rename leaves; it must never be restored.
  junk = os.path.join(ckpts, '290.orbax-checkpoint-tmp', 'state')
  os.makedirs(junk)
  with open(os.path.join(junk, 'garbage'), 'w') as f:
    f.write('half written')

  proc = launch(run_dir)
  stdout, _ = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == 0, stdout[-3000:]
  assert f'Resuming from the checkpoint at step {done[-1]}' in stdout
  assert 'Held-out open-loop latent prediction error' in stdout
  assert 'Linear probe R^2 of the frozen latent' in stdout
  state, meta = final_state(run_dir)
  assert meta['step'] == 300
  jax.tree.map(np.testing.assert_array_equal, state['params'], ref_state['params'])
  jax.tree.map(np.testing.assert_array_equal, state['opt_state'], ref_state['opt_state'])
  assert meta['best_val_loss'] == ref_meta['best_val_loss']
  assert json.load(open(os.path.join(run_dir, layout.WORLD_MODEL_DIR, layout.EVAL_FILE))) == evaluation
  steps = [r['step'] for r in training.read_metrics(os.path.join(run_dir, layout.WORLD_MODEL_DIR))
           if r['split'] == 'val']
  assert steps == sorted(set(steps))  # Records of the killed run past its checkpoint dropped.


def test_missing_and_incompatible_dataset(tmp_path, dataset_dir):
  with pytest.raises(FileNotFoundError, match='generate_data.py'):
    train_lib.train_and_evaluate(make_config(), str(tmp_path / 'empty'), progress=False)
  workdir = fresh_workdir(tmp_path, dataset_dir, 'other_task')
  from experiments.configs import pointmaze  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="task 'pointmaze'"):
    train_lib.train_and_evaluate(pointmaze.get_config('test'), workdir, progress=False)


def test_checkpoint_of_other_model_is_rejected(tmp_path, dataset_dir):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'changed')
  train_lib.train_and_evaluate(make_config(steps=2), workdir, progress=False)
  c = make_config(steps=4)
  c.model.predictor.mlp_dim = 64
  with pytest.raises(ValueError, match=r'model_kwargs.predictor.mlp_dim: checkpoint has 32, '
                     'expected 64'):
    train_lib.train_and_evaluate(c, workdir, progress=False)


@pytest.mark.parametrize('field,value,match', [
    ('num_hist', 0, 'num_hist must be >= 1'),
    ('model.encoder', 'resnet', "model.encoder='resnet'"),
    ('model.encoder', 'dinov2_vits14', 'needs model.dinov2.weights'),
    ('train.keep', 0, 'train.keep must be >= 1'),
    ('model.predictor.dropout', 1.0, 'dropout must be in'),
    ('train.predictor_lr', float('nan'), 'train.predictor_lr must be a finite number >= 0; got '
     'nan'),
    ('train.encoder_lr', float('inf'), 'train.encoder_lr must be a finite number >= 0; got inf'),
    ('train.weight_decay', -0.1, 'train.weight_decay must be a finite number >= 0'),
    ('data.val_fraction', 1.0, 'data.val_fraction must be a finite number >= 0 and < 1'),
    ('train.encoder_pretrain_lr', float('nan'), 'train.encoder_pretrain_lr must be a finite'),
    ('plan.alpha', float('nan'), r'plan.alpha=nan: numbers in the config must be finite'),
    ('train.encoder_pretrain_feature_weights', 'x=2', 'needs model.encoder=conv'),
    ('train.encoder_pretrain_feature_weights', 'z=2', r"'z=2' for wall: write name=weight with "
     r"name one of \('x', 'y'\)"),
    ('train.predictor_readout_weight', -1.0, 'train.predictor_readout_weight must be a finite'),
    ('train.predictor_readout_features', 'x=2', 'which train.predictor_readout_weight=0 turns '
     'off'),
])
def test_contradictory_config_fails_at_startup(field, value, match):
  c = wall.get_config('test')
  *parents, leaf = field.split('.')
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    train_lib.check_config(c)


def test_readout_settings_are_checked_with_their_weight():
  c = wall.get_config('test')
  c.train.predictor_readout_weight = 1.0
  c.train.predictor_readout_features = 'z=2'
  with pytest.raises(ValueError, match=r"predictor_readout_features: .*'z=2' for wall"):
    train_lib.check_config(c)
  c.train.predictor_readout_features = 'x=2'
  c.probe.train_frames = 0
  with pytest.raises(ValueError, match='set probe.train_frames >= 1'):
    train_lib.check_config(c)


def test_configs_of_every_variant_are_valid():
  from experiments.configs import pointmaze, pusht  # pylint: disable=g-import-not-at-top
  for module in (wall, pusht, pointmaze):
    for variant in ('test', 'cpu', 'gpu'):
      train_lib.check_config(module.get_config(variant))
    paper = module.get_config('paper')
    assert paper.model.encoder == 'dinov2_vits14' and paper.image_size == 224
    assert (paper.model.predictor.depth, paper.model.predictor.num_heads,
            paper.model.predictor.head_dim, paper.model.predictor.mlp_dim) == (6, 16, 64, 2048)


def test_conv_encoder_is_pretrained_once_and_kept(tmp_path, dataset_dir, capsys, monkeypatch):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'conv')
  c = conv_config()
  resume_file = os.path.join(workdir, layout.WORLD_MODEL_DIR, pretrain_lib.RESUME_FILE)
  closed = []
  with monkeypatch.context() as m:  # Stopped after pretraining step 3 of 3; saved at step 2.
    m.setattr(pretrain_lib.tqdm, 'tqdm', fakes.interrupting_bar(3))
    close = training.Checkpointer.close
    m.setattr(training.Checkpointer, 'close', lambda self: (closed.append(self.directory),
                                                            close(self))[1])
    with pytest.raises(fakes.Interrupted):
      train_lib.train_and_evaluate(c, workdir, progress=False)
  assert os.path.exists(resume_file)
  assert closed == [os.path.join(workdir, layout.WORLD_MODEL_DIR)]  # Closed on the way out.
  summary = train_lib.train_and_evaluate(c, workdir, progress=False)
  out = capsys.readouterr().out
  assert 'Pretraining the conv encoder' in out
  assert f'Resumed the encoder pretraining at step 2 from {resume_file}' in out
  assert not os.path.exists(resume_file)  # Its encoder is in the step-0 checkpoint.
  assert 'Token cache: ' in out and 'frames encoded once' in out  # Frozen encoder, run once.
  assert summary['encoder_pretraining']['images'] == 16
  ck = training.Checkpointer(os.path.join(workdir, layout.WORLD_MODEL_DIR))
  assert ck.steps() == [0, 2]  # Step 0 holds the freshly pretrained encoder.
  s0, meta0 = ck.restore_raw('latest', step=0)
  s2, _ = ck.restore_raw('latest', step=2)
  ck.close()
  assert meta0['encoder_pretraining']['images'] == 16
  jax.tree.map(np.testing.assert_array_equal, s0['frozen'], s2['frozen'])
  c.train.steps = 4
  with pytest.raises(ValueError, match=r'train.steps: checkpoint has 2, this run 4'):
    train_lib.train_and_evaluate(c, workdir, progress=False)
  summary = train_lib.train_and_evaluate(c, workdir, progress=False, accept_changed_settings=True)
  out = capsys.readouterr().out
  assert 'Pretraining' not in out and 'train.steps: checkpoint has 2, this run 4' in out
  assert 'Token cache: ' in out  # Rebuilt from the checkpoint's encoder on resume.
  assert summary['resumed_from'] == 2 and summary['steps'] == 4


def test_encoder_from_trains_another_predictor_on_the_same_encoder(tmp_path, dataset_dir,
                                                                   capsys):
  base = fresh_workdir(tmp_path, dataset_dir, 'base')
  train_lib.train_and_evaluate(conv_config(), base, progress=False)
  base_state, base_meta = final_state(base)
  source = os.path.join(base, layout.WORLD_MODEL_DIR)
  capsys.readouterr()
  deeper = fresh_workdir(tmp_path, dataset_dir, 'deeper')
  c = conv_config(encoder_from=source)
  c.model.predictor.depth = 2
  summary = train_lib.train_and_evaluate(c, deeper, progress=False)
  out = capsys.readouterr().out
  assert 'Pretraining' not in out and 'Using the encoder of the world model at' in out
  state, meta = final_state(deeper)
  jax.tree.map(np.testing.assert_array_equal, state['frozen'], base_state['frozen'])
  assert len(state['params']['predictor']) > len(base_state['params']['predictor'])
  assert meta['initialised_from']['parts'] == 'encoder'
  assert summary['initialised_from']['step'] == 2
  assert meta['encoder_pretraining'] == base_meta['encoder_pretraining']  # Carried over.
  # A predictor with the read-out term in its loss, on the same encoder.
  c = conv_config(encoder_from=source, predictor_readout_weight=1.0,
                  predictor_readout_features='x=2')
  train_lib.train_and_evaluate(c, fresh_workdir(tmp_path, dataset_dir, 'readout'), progress=False)
  assert 'Predictor loss: latent MSE + 1 x the read-out error of 2 state features' in (
      capsys.readouterr().out)
  with open(os.path.join(tmp_path, 'readout', layout.WORLD_MODEL_DIR, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert any(np.isfinite(r.get('readout_mse', np.nan)) for r in records)
  # Another encoder cannot use it; init_from and encoder_from together contradict each other.
  other = conv_config(encoder_from=source)
  other.model.conv.token_dim = 8
  assert_refused(other, fresh_workdir(tmp_path, dataset_dir, 'other'), 'encoder_from', 'token_dim')
  with pytest.raises(ValueError, match='init_from and train.encoder_from are both set'):
    train_lib.check_config(conv_config(encoder_from=source, init_from=source))
  with pytest.raises(ValueError, match='train.encoder_from=.*is not a directory'):
    train_lib.check_config(conv_config(encoder_from=str(tmp_path / 'nowhere')))


def assert_refused(config, workdir, flag, field):
  """Training `config` stops before any work: the checkpoint named by train.<flag> differs
  from this model in `field`."""
  label = 'encoder' if flag == 'encoder_from' else 'initial'
  with pytest.raises(ValueError, match=rf'(?s){label} checkpoint does not match this config '
                     rf'\(--config.train.{flag}\).*{field}'):
    train_lib.train_and_evaluate(config, workdir, progress=False)


def test_dataset_the_config_does_not_describe_is_refused(tmp_path, dataset_dir):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'other_data')
  c = make_config(steps=2)
  c.data.num_trajectories, c.data.seed = 12, 5
  with pytest.raises(ValueError, match=r'(?s)generated with other data settings than this config'
                     r'.*data.seed: dataset has 0, this config 5.*data.num_trajectories: dataset '
                     r'has 8, this config 12.*--config.data.seed=0 --config.data.num_trajectories=8'):
    train_lib.train_and_evaluate(c, workdir, progress=False)
  assert os.listdir(workdir) == [layout.DATASET_DIR]  # Refused before writing anything.


def test_init_from_starts_on_new_data_from_another_runs_parameters(tmp_path, tmp_path_factory,
                                                                    dataset_dir, capsys):
  base = fresh_workdir(tmp_path, dataset_dir, 'base')
  train_lib.train_and_evaluate(make_config(steps=4, checkpoint_every=4, eval_every=4), base,
                               progress=False)
  base_state, _ = final_state(base)
  # Another dataset of the same task: allowed (the point is more or other data).
  workdir = str(tmp_path / 'more_data')
  more = wall.get_config('test')
  more.data.num_trajectories = 12
  generate.generate(more, workdir, progress=False, preview=False)
  c = make_config(steps=2, checkpoint_every=2, eval_every=2, predictor_lr=0.0, encoder_lr=0.0,
                  init_from=os.path.join(base, layout.WORLD_MODEL_DIR))
  c.data.num_trajectories = 12
  summary = train_lib.train_and_evaluate(c, workdir, progress=False)
  assert 'Starting from the world model at' in capsys.readouterr().out
  assert summary['initialised_from']['step'] == 4 and summary['steps'] == 2
  state, meta = final_state(workdir)
  assert meta['initialised_from']['step'] == 4
  # At lr 0 two steps leave the loaded parameters as they were: the start was the base run's.
  jax.tree.map(np.testing.assert_array_equal, state['params'], base_state['params'])
  # Another model cannot start from it; a missing directory is refused before any work.
  other = make_config(steps=2, init_from=os.path.join(base, layout.WORLD_MODEL_DIR))
  other.model.predictor.mlp_dim = 64
  assert_refused(other, fresh_workdir(tmp_path, dataset_dir, 'other'), 'init_from', 'mlp_dim')
  with pytest.raises(ValueError, match='train.init_from=.*is not a directory'):
    train_lib.check_config(make_config(init_from=str(tmp_path / 'nowhere')))


# ---------------------------------------------------------------------------------------------
# Damage, non-finite values and concurrent runs. A reference run of 40 steps saves checkpoints
# 20 and 40; each test damages a copy and checks that the run recovers to the same parameters
# (nothing lost) or stops with an error naming the problem.

SHORT = dict(steps=40, checkpoint_every=20, eval_every=20, log_every=20, keep=2)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, dataset_dir):
  workdir = fresh_workdir(tmp_path_factory.mktemp('reference'), dataset_dir, 'ref')
  train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)
  state, meta = final_state(workdir)
  return workdir, state, meta


def copy_run(tmp_path, reference, name):
  workdir = str(tmp_path / name)
  shutil.copytree(reference[0], workdir)
  return workdir


def flip_bytes(step_dir, count=8):
  """Inverts `count` bytes in the middle of the largest array file of a saved step's state."""
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, 'state'))
           for f in names if os.sep + 'd' + os.sep in os.path.join(root, f) + os.sep]
  big = max(files, key=os.path.getsize)
  raw = bytearray(open(big, 'rb').read())
  for i in range(len(raw) // 2, len(raw) // 2 + count):
    raw[i] ^= 0xFF
  with open(big, 'wb') as f:
    f.write(raw)
  return big


def damage(step_dir, kind):
  if kind == 'flipped_state':
    flip_bytes(step_dir)
  elif kind == 'deleted_meta':
    shutil.rmtree(os.path.join(step_dir, 'meta'))
  elif kind == 'truncated_meta':
    path = os.path.join(step_dir, 'meta', 'metadata')
    raw = open(path).read()
    with open(path, 'w') as f:
      f.write(raw[:len(raw) // 2])
  else:
    raise ValueError(kind)


@pytest.mark.parametrize('kind', ['flipped_state', 'deleted_meta', 'truncated_meta'])
def test_damaged_latest_checkpoint_falls_back_to_intact_one(tmp_path, reference, kind):
  workdir = copy_run(tmp_path, reference, kind)
  out = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  damage(os.path.join(out, 'checkpoints', '40'), kind)
  with pytest.warns(training.CorruptCheckpointWarning,
                    match=r'checkpoints/40/(state|meta).*falling back to step 20'):
    summary = train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)
  assert summary['resumed_from'] == 20 and summary['steps'] == 40
  state, meta = final_state(workdir)
  assert meta['step'] == 40
  # Retrained from step 20: the same parameters and optimiser state as the intact run.
  jax.tree.map(np.testing.assert_array_equal, state['params'], reference[1]['params'])
  jax.tree.map(np.testing.assert_array_equal, state['opt_state'], reference[1]['opt_state'])
  # The damaged step is kept for inspection, out of orbax's way.
  assert os.path.isdir(os.path.join(out, 'corrupt', 'checkpoints-40'))
  reason = open(os.path.join(out, 'corrupt', 'checkpoints-40', 'REASON.txt')).read()
  assert "checkpoints/40" in reason


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path, reference):
  workdir = copy_run(tmp_path, reference, 'all')
  for step in ('20', '40'):
    damage(os.path.join(workdir, layout.WORLD_MODEL_DIR, 'checkpoints', step), 'flipped_state')
  with pytest.warns(training.CorruptCheckpointWarning):
    with pytest.raises(training.CorruptCheckpointError,
                       match=r'(?s)No intact latest checkpoint.*checkpoints/40.*checkpoints/20'):
      train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)


def test_damaged_best_is_set_aside_on_resume(tmp_path, reference):
  workdir = copy_run(tmp_path, reference, 'best')
  out = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  (best_step,) = os.listdir(os.path.join(out, 'best'))
  flip_bytes(os.path.join(out, 'best', best_step))
  with pytest.warns(training.CorruptCheckpointWarning, match=f'best/{best_step}/state'):
    summary = train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)
  assert summary['resumed_from'] == 40
  assert os.path.isdir(os.path.join(out, 'corrupt', f'best-{best_step}'))


def test_resume_with_other_training_settings_is_refused(tmp_path, reference):
  workdir = copy_run(tmp_path, reference, 'settings')
  out = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  before = sorted(os.listdir(os.path.join(out, 'checkpoints')))
  other = make_config(**dict(SHORT, steps=60, predictor_lr=1e-3))
  other.seed = 3
  with pytest.raises(ValueError, match=r'(?s)other training settings.*seed: checkpoint has 0, this '
                     r'run 3.*train.predictor_lr: checkpoint has 0.0005, this run 0.001.*'
                     r'train.steps: checkpoint has 40, this run 60.*--accept_changed_settings'):
    train_lib.train_and_evaluate(other, workdir, progress=False)
  # Nothing changed on disk; the finished run is still marked done.
  assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == before
  assert io.is_done(out)
  summary = train_lib.train_and_evaluate(other, workdir, progress=False, accept_changed_settings=True)
  assert summary['resumed_from'] == 40 and summary['steps'] == 60
  _, meta = final_state(workdir)
  assert meta['config']['seed'] == 3  # Later saves record the settings they were made with.
  # The best save from before the accepted change is still this run's: kept.
  assert not os.path.exists(os.path.join(out, 'stale'))
  ck = training.Checkpointer(out)
  assert ck.read_meta('best')['run_id'] == meta['run_id']
  ck.close()


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path, reference):
  workdir = copy_run(tmp_path, reference, 'locked')
  lock = os.path.join(workdir, io.LOCK_FILE)
  # A live process (this test's parent) holds the lock.
  with open(lock, 'w') as f:
    json.dump({'pid': os.getppid(), 'host': socket.gethostname(), 'start_time': None,
               'command': 'train_world_model', 'created': 'earlier'}, f)
  with pytest.raises(io.WorkdirLockedError, match=f'in use by pid {os.getppid()}'):
    train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)
  assert os.path.exists(lock)  # Not ours to remove.
  # A dead process's lock is stale: taken over with a warning, released at the end.
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  with open(lock, 'w') as f:
    json.dump({'pid': dead.pid, 'host': socket.gethostname(), 'start_time': None,
               'command': 'train_world_model', 'created': 'earlier'}, f)
  with pytest.warns(UserWarning, match='stale lock'):
    summary = train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)
  assert summary['resumed_from'] == 40 and not os.path.exists(lock)


def test_nonfinite_training_stops_before_saving(tmp_path, dataset_dir):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'blowup')
  # Finite but absurd: after one Adam step the parameters are ~1e30, the next loss overflows.
  c = make_config(**dict(SHORT, predictor_lr=1e30, encoder_lr=1e30))
  with pytest.raises(checks.NonFiniteError, match=r'Training stopped at step \d+: non-finite loss '
                     r'or gradient.*no checkpoint was saved.*train.predictor_lr'):
    train_lib.train_and_evaluate(c, workdir, progress=False)
  out = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  assert not os.listdir(os.path.join(out, 'checkpoints')) and not os.listdir(
      os.path.join(out, 'best'))
  assert not io.is_done(out) and not os.path.exists(os.path.join(out, layout.EVAL_FILE))


def test_nonfinite_dataset_is_refused(tmp_path, dataset_dir):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'nan_data')
  path = os.path.join(workdir, layout.DATASET_DIR)
  arrays_path = os.path.join(path, 'arrays.npz')
  with np.load(arrays_path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays['states'][1, 3, 0] = np.nan
  with open(arrays_path, 'wb') as f:
    np.savez(f, **arrays)
  meta = json.load(open(os.path.join(path, 'meta.json')))  # Checksums recomputed: only the
  meta['arrays_sha256'] = io.sha256_file(arrays_path)     # finite check can tell.
  meta['meta_sha256'] = dataset_lib.meta_digest(meta)
  json.dump(meta, open(os.path.join(path, 'meta.json'), 'w'))
  with pytest.raises(ValueError, match=r'states holds 1 non-finite values \(first at trajectory 1'):
    train_lib.train_and_evaluate(make_config(**SHORT), workdir, progress=False)


def test_fresh_run_sets_stale_best_aside(tmp_path, reference):
  workdir = copy_run(tmp_path, reference, 'stale')
  out = os.path.join(workdir, layout.WORLD_MODEL_DIR)
  (old_best,) = os.listdir(os.path.join(out, 'best'))
  shutil.rmtree(os.path.join(out, 'checkpoints'))  # Retraining from scratch, other seed.
  c = make_config(**dict(SHORT, steps=20))
  c.seed = 5
  with pytest.warns(UserWarning, match=f'best/{old_best} was left by an earlier run'):
    summary = train_lib.train_and_evaluate(c, workdir, progress=False)
  assert summary['resumed_from'] is None
  assert os.path.isdir(os.path.join(out, 'stale', f'best-{old_best}'))
  ck = training.Checkpointer(out)
  assert ck.read_meta('best')['config']['seed'] == 5  # This run's own best.
  ck.close()
  assert [r['step'] for r in training.read_metrics(out) if r['split'] == 'val'] == [20]
