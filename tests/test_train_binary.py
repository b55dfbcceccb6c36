"""The world-model training binary: end to end on Wall's `test` config, kill + resume, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import generate_data
from experiments import train_world_model as twm
from experiments.configs import wall
from wmjax import training

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
  generate_data.generate(wall.get_config('test'), workdir, progress=False, preview=False)
  return os.path.join(workdir, generate_data.DATASET_DIR)


def fresh_workdir(tmp_path, dataset_dir, name):
  workdir = str(tmp_path / name)
  shutil.copytree(dataset_dir, os.path.join(workdir, twm.DATASET_DIR))
  return workdir


def launch(workdir):
  cmd = [sys.executable, BINARY, '--config', os.path.join(ROOT, 'experiments/configs/wall.py:test'),
         '--workdir', workdir] + [f'--config.train.{k}={v}' for k, v in OVERRIDES.items()]
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             WMJAX_JAX_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT)


def final_state(workdir):
  ck = training.Checkpointer(os.path.join(workdir, twm.OUT_DIR))
  try:
    state, meta = ck.restore_raw('latest')
  finally:
    ck.close()
  return jax.device_get(state), meta


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, dataset_dir):
  # Uninterrupted reference run, in process.
  ref_dir = fresh_workdir(tmp_path, dataset_dir, 'ref')
  summary = twm.train_and_evaluate(make_config(), ref_dir, progress=False)
  assert summary['steps'] == 300 and summary['resumed_from'] is None
  out = os.path.join(ref_dir, twm.OUT_DIR)
  records = training.read_metrics(out)
  assert {r['split'] for r in records} == {'train', 'val'}
  assert os.listdir(os.path.join(out, 'tensorboard'))
  evaluation = json.load(open(os.path.join(out, twm.EVAL_FILE)))
  assert evaluation['horizon'] == 4  # Test trajectories hold 20 steps = 4 model actions.
  for mode in twm.ROLLOUT_MODES:
    assert len(evaluation['errors'][mode]['model']['loss']) == 4
  assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == ['280', '300']
  ref_state, ref_meta = final_state(ref_dir)
  assert ref_meta['step'] == 300

  # Killed after its first checkpoint, then restarted.
  run_dir = fresh_workdir(tmp_path, dataset_dir, 'run')
  first = os.path.join(run_dir, twm.OUT_DIR, 'checkpoints', '20')
  proc = launch(run_dir)
  deadline = time.time() + 120
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not os.path.exists(os.path.join(run_dir, twm.OUT_DIR, twm.EVAL_FILE))
  ckpts = os.path.join(run_dir, twm.OUT_DIR, 'checkpoints')
  done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert done and done[-1] < 300
  # What a save killed before its final rename leaves; it must never be restored.
  junk = os.path.join(ckpts, '290.orbax-checkpoint-tmp', 'state')
  os.makedirs(junk)
  with open(os.path.join(junk, 'garbage'), 'w') as f:
    f.write('half written')

  proc = launch(run_dir)
  stdout, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, stdout[-3000:]
  assert f'Resuming from the checkpoint at step {done[-1]}' in stdout
  assert 'Held-out open-loop latent prediction error' in stdout
  state, meta = final_state(run_dir)
  assert meta['step'] == 300
  jax.tree.map(np.testing.assert_array_equal, state['params'], ref_state['params'])
  jax.tree.map(np.testing.assert_array_equal, state['opt_state'], ref_state['opt_state'])
  assert meta['best_val_loss'] == ref_meta['best_val_loss']
  assert json.load(open(os.path.join(run_dir, twm.OUT_DIR, twm.EVAL_FILE))) == evaluation
  steps = [r['step'] for r in training.read_metrics(os.path.join(run_dir, twm.OUT_DIR))
           if r['split'] == 'val']
  assert steps == sorted(set(steps))  # Records of the killed run past its checkpoint dropped.


def test_missing_and_incompatible_dataset(tmp_path, dataset_dir):
  with pytest.raises(FileNotFoundError, match='generate_data.py'):
    twm.train_and_evaluate(make_config(), str(tmp_path / 'empty'), progress=False)
  workdir = fresh_workdir(tmp_path, dataset_dir, 'other_task')
  from experiments.configs import pointmaze  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="task 'pointmaze'"):
    twm.train_and_evaluate(pointmaze.get_config('test'), workdir, progress=False)


def test_checkpoint_of_other_model_is_rejected(tmp_path, dataset_dir):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'changed')
  twm.train_and_evaluate(make_config(steps=2), workdir, progress=False)
  c = make_config(steps=4)
  c.model.predictor.mlp_dim = 64
  with pytest.raises(ValueError, match=r'model_kwargs.predictor.mlp_dim: checkpoint has 32, '
                     'expected 64'):
    twm.train_and_evaluate(c, workdir, progress=False)


@pytest.mark.parametrize('field,value,match', [
    ('num_hist', 0, 'num_hist must be >= 1'),
    ('model.encoder', 'resnet', "model.encoder='resnet'"),
    ('model.encoder', 'dinov2_vits14', 'needs model.dinov2.weights'),
    ('train.keep', 0, 'train.keep must be >= 1'),
    ('model.predictor.dropout', 1.0, 'dropout must be in'),
])
def test_contradictory_config_fails_at_startup(field, value, match):
  c = wall.get_config('test')
  *parents, leaf = field.split('.')
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    twm.check_config(c)


def test_configs_of_every_variant_are_valid():
  from experiments.configs import pointmaze, pusht  # pylint: disable=g-import-not-at-top
  for module in (wall, pusht, pointmaze):
    for variant in ('test', 'cpu'):
      twm.check_config(module.get_config(variant))
    paper = module.get_config('paper')
    assert paper.model.encoder == 'dinov2_vits14' and paper.image_size == 224
    assert (paper.model.predictor.depth, paper.model.predictor.num_heads,
            paper.model.predictor.head_dim, paper.model.predictor.mlp_dim) == (6, 16, 64, 2048)


def test_conv_encoder_is_pretrained_once_and_kept(tmp_path, dataset_dir, capsys):
  workdir = fresh_workdir(tmp_path, dataset_dir, 'conv')
  c = make_config(steps=2, checkpoint_every=2, eval_every=2, encoder_pretrain_steps=3,
                  encoder_pretrain_images=16, encoder_pretrain_batch_size=4)
  c.model.encoder = 'conv'
  c.model.conv.channels = (4, 4, 4, 4)  # 64 px -> 4 x 4 tokens.
  c.model.conv.token_dim = 4
  summary = twm.train_and_evaluate(c, workdir, progress=False)
  assert 'Pretraining the conv encoder' in capsys.readouterr().out
  assert summary['encoder_pretraining']['images'] == 16
  ck = training.Checkpointer(os.path.join(workdir, twm.OUT_DIR))
  assert ck.steps() == [0, 2]  # Step 0 holds the freshly pretrained encoder.
  s0, meta0 = ck.restore_raw('latest', step=0)
  s2, _ = ck.restore_raw('latest', step=2)
  ck.close()
  assert meta0['encoder_pretraining']['images'] == 16
  jax.tree.map(np.testing.assert_array_equal, s0['frozen'], s2['frozen'])
  c.train.steps = 4
  summary = twm.train_and_evaluate(c, workdir, progress=False)
  assert 'Pretraining' not in capsys.readouterr().out
  assert summary['resumed_from'] == 2 and summary['steps'] == 4
